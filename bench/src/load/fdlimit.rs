//! The open-file limit (RLIMIT_NOFILE): one process holding 10,000 connections
//! needs more descriptors than the usual soft limit of 1,024. Each connection
//! of `run` and `hold` is one socket, plus one timerfd when it sends on the
//! open loop's schedule, so 10,000 sending connections take about 20,000.

use std::io;

/// What `tqx-bench` and the servers `bench-footprint` starts ask for, in file
/// descriptors: two per connection (socket and timerfd) for 30,000 connections,
/// with room to spare. Raising the hard limit needs privilege (root, or
/// CAP_SYS_RESOURCE) and stays below `/proc/sys/fs/nr_open`; without it, the
/// soft limit is raised to the hard one.
pub const NOFILE_WANTED: libc::rlim_t = 65_536;

/// Raises this process's RLIMIT_NOFILE: both limits to `wanted` when the hard
/// limit is lower and the process may raise it, else the soft limit to the hard
/// one. Never lowers either. Returns the soft limit in force afterwards.
///
/// Only `getrlimit` and `setrlimit` (async-signal-safe, no allocation), so it
/// may run in a `pre_exec` hook between fork and exec.
pub fn raise_nofile(wanted: libc::rlim_t) -> io::Result<libc::rlim_t> {
    let mut current = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `current` is a valid rlimit to write into.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if current.rlim_max < wanted {
        let raised = libc::rlimit { rlim_cur: wanted, rlim_max: wanted };
        // SAFETY: `raised` is a valid rlimit. EPERM (no privilege) or EINVAL
        // (above nr_open) leave the limits as they were: fall through.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(wanted);
        }
    }
    if current.rlim_cur < current.rlim_max {
        let raised = libc::rlimit { rlim_cur: current.rlim_max, rlim_max: current.rlim_max };
        // SAFETY: as above; raising the soft limit up to the hard one is
        // always allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        return Ok(current.rlim_max);
    }
    Ok(current.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_never_lowers_the_soft_limit() {
        let mut before = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: `before` is a valid rlimit to write into.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut before) }, 0);
        // Asking for less than what is in force lowers nothing, and the soft
        // limit ends at least at the hard limit that was in force.
        let soft = raise_nofile(16).unwrap();
        assert!(soft >= before.rlim_cur, "{soft} < {}", before.rlim_cur);
        assert!(soft >= before.rlim_max, "{soft} < {}", before.rlim_max);
    }
}
