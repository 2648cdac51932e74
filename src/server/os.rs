//! What the server asks of the operating system directly (`libc`): listening
//! sockets with explicit options, CPU pinning, and signal delivery to one thread.

use std::io;
use std::mem;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, RawFd};

fn check(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// Pending connections the kernel queues per listener before refusing more.
const LISTEN_BACKLOG_COUNT: libc::c_int = 4096;

/// How long [`probe_exclusive`] keeps trying an address that is in use. A
/// server killed a moment ago still holds its listening sockets for ~10–25 ms
/// (its io_uring instance, which holds them, is torn down asynchronously after
/// the process is gone): without this, a restart right after `kill -9` failed
/// with "Address already in use" about half the time. A live server holds the
/// address past this and is refused. Costs at most this much at start.
pub(crate) const BIND_IN_USE_WAIT_MS: u64 = 2_000;
/// Pause between two tries within [`BIND_IN_USE_WAIT_MS`].
const BIND_RETRY_PAUSE_MS: u64 = 10;

/// Binds `addr` without SO_REUSEPORT (with SO_REUSEADDR, so connections of an
/// earlier server in TIME_WAIT do not block it) and releases it at once: fails
/// with "address in use" if any socket listens there (even one with
/// SO_REUSEPORT) for longer than [`BIND_IN_USE_WAIT_MS`], and returns the
/// address with port 0 resolved. The reuseport listeners bind the returned
/// address right after; the window between the two is microseconds.
pub(crate) fn probe_exclusive(addr: SocketAddr) -> io::Result<SocketAddr> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(BIND_IN_USE_WAIT_MS);
    loop {
        match listen_with(addr, false).and_then(|probe| probe.local_addr()) {
            Err(error) if error.raw_os_error() == Some(libc::EADDRINUSE) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(BIND_RETRY_PAUSE_MS));
            }
            result => return result,
        }
    }
}

/// A listening TCP socket on `addr` with SO_REUSEADDR (restart without waiting
/// out TIME_WAIT) and SO_REUSEPORT (every reactor binds its own socket to the same
/// address and the kernel spreads connections across them), set explicitly rather
/// than left to a library's defaults. Also TCP_NODELAY: replies are written
/// whole, so Nagle must not hold their last segment back. Linux copies it to
/// every socket the listener accepts (pinned by a test below), which saves a
/// `setsockopt` per accepted connection (measured in
/// docs/benchmarks/changelog.md).
pub(crate) fn listen_reuseport(addr: SocketAddr) -> io::Result<TcpListener> {
    listen_with(addr, true)
}

fn listen_with(addr: SocketAddr, reuseport: bool) -> io::Result<TcpListener> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain system calls on a descriptor we own; on error it is closed.
    unsafe {
        let fd = check(libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0))?;
        let listener = TcpListener::from_raw_fd(fd); // closes fd on every early return
        let one: libc::c_int = 1;
        let options: &[(libc::c_int, libc::c_int)] = if reuseport {
            &[
                (libc::SOL_SOCKET, libc::SO_REUSEADDR),
                (libc::SOL_SOCKET, libc::SO_REUSEPORT),
                (libc::IPPROTO_TCP, libc::TCP_NODELAY),
            ]
        } else {
            &[(libc::SOL_SOCKET, libc::SO_REUSEADDR)]
        };
        for &(level, option) in options {
            check(libc::setsockopt(
                fd,
                level,
                option,
                (&one as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            ))?;
        }
        let (storage, length) = sockaddr_of(addr);
        check(libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), length))?;
        check(libc::listen(fd, LISTEN_BACKLOG_COUNT))?;
        Ok(listener)
    }
}

fn sockaddr_of(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let length = match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large enough and aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(v4.ip().octets()) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr = libc::in6_addr { s6_addr: v6.ip().octets() };
            sin6.sin6_flowinfo = v6.flowinfo();
            sin6.sin6_scope_id = v6.scope_id();
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, length as libc::socklen_t)
}

/// Stops reads on a socket: a pending or later read returns 0 (end of stream).
/// Used to end accept loops and idle connections at shutdown without dropping an
/// in-flight io_uring operation (which would leak it in the kernel).
pub(crate) fn shutdown_read(fd: RawFd) {
    // SAFETY: shutdown on a descriptor number; at worst it fails with ENOTSOCK/EBADF.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RD);
    }
}

/// Shuts a socket down both ways: a pending read completes with end of
/// stream and a pending write (a peer that stopped reading) fails, so the
/// connection's tasks end the usual way without dropping an io_uring operation.
pub(crate) fn shutdown_both(fd: RawFd) {
    // SAFETY: shutdown on a descriptor number; at worst it fails with ENOTSOCK/EBADF.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// The peer address of a connected socket (`None` if it cannot be read: the
/// peer reset, or `fd` is not a socket). For the activity log's examples,
/// once per line; the caller guarantees `fd` is still the connection's.
pub(crate) fn peer_address(fd: RawFd) -> Option<std::net::SocketAddr> {
    use std::os::fd::FromRawFd as _;
    if fd < 0 {
        return None; // not a descriptor (`from_raw_fd` refuses -1)
    }
    // SAFETY: the stream only borrows the descriptor: ManuallyDrop never
    // closes it, and getpeername on any descriptor number is harmless.
    let stream = mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
    stream.peer_addr().ok()
}

/// The CPUs this process may run on (its affinity mask, which `taskset` and
/// cgroup cpusets set), in increasing order.
pub(crate) fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes within it and
    // CPU_ISSET reads within it (i < CPU_SETSIZE).
    unsafe {
        let mut set: libc::cpu_set_t = mem::zeroed();
        check(libc::sched_getaffinity(0, mem::size_of::<libc::cpu_set_t>(), &mut set))?;
        Ok((0..libc::CPU_SETSIZE as usize).filter(|&cpu| libc::CPU_ISSET(cpu, &set)).collect())
    }
}

/// Pins the calling thread to `core`. Failure (a cpuset that excludes the core)
/// is reported, not fatal: an unpinned server still serves.
pub(crate) fn pin_current_thread(core: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = mem::zeroed();
        libc::CPU_SET(core, &mut set);
        check(libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set))?;
    }
    Ok(())
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread and every thread it
/// spawns afterwards, so that only [`wait_for_signal`] receives them.
pub(crate) fn block_stop_signals() -> io::Result<()> {
    // SAFETY: sigset manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        let result = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if result != 0 {
            return Err(io::Error::from_raw_os_error(result));
        }
    }
    Ok(())
}

/// Waits for SIGINT, SIGTERM (stop) or SIGHUP (reload), blocked beforehand by
/// [`block_stop_signals`].
pub(crate) fn wait_for_signal() -> libc::c_int {
    // SAFETY: sigwait on a local set of blocked signals.
    unsafe {
        let mut set: libc::sigset_t = mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        let mut signal: libc::c_int = 0;
        loop {
            if libc::sigwait(&set, &mut signal) == 0 {
                return signal;
            }
        }
    }
}

/// A random `u64` from the kernel (engine seeds, WAL segment salts): fresh per
/// start, so lease tokens are hard to guess.
pub(crate) fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if filled == bytes.len() as isize {
        u64::from_ne_bytes(bytes)
    } else {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        (now as u64).rotate_left(17) ^ u64::from(std::process::id())
    }
}

/// Asks the signal thread to stop the server, as SIGTERM would (the WAL thread
/// does this when the log fails).
pub(crate) fn signal_stop() {
    // SAFETY: sends a signal to this process; no memory is involved.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGTERM);
    }
}

/// Raises this process's open-file soft limit to its hard limit (what an
/// unprivileged process may do; shells often start it at 1,024) and returns
/// the soft limit now in force.
pub(crate) fn raise_open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid rlimit to write into.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: `raised` is a valid rlimit.
        if check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) }).is_ok() {
            limit = raised;
        }
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn nodelay(fd: RawFd) -> libc::c_int {
        let mut value: libc::c_int = 0;
        let mut length = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `length` are valid for getsockopt to write into.
        let result = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&mut value as *mut libc::c_int).cast(),
                &mut length,
            )
        };
        assert_eq!(result, 0, "getsockopt: {}", io::Error::last_os_error());
        value
    }

    /// The reactors no longer set TCP_NODELAY on each accepted socket: they
    /// rely on Linux copying it from the listener. If a kernel stopped doing
    /// so, replies would wait for Nagle again; this catches it.
    #[test]
    fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let listener = listen_reuseport(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        assert_ne!(nodelay(listener.as_raw_fd()), 0);
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert_ne!(nodelay(accepted.as_raw_fd()), 0);
    }
}

/// CPU numbers past this are refused in `--cpus` (`CPU_SETSIZE`, what one
/// affinity mask holds).
pub const CPU_ID_MAX: usize = libc::CPU_SETSIZE as usize - 1;

/// Parses a CPU list as `taskset -c` and cpusets write it: `0-3,6,8-9`.
/// Sorted, without repeats; at least one CPU.
pub fn parse_cpu_list(list: &str) -> Result<Vec<usize>, String> {
    let cpu = |s: &str| -> Result<usize, String> {
        let cpu: usize = s.trim().parse().map_err(|_| format!("{s:?} is not a CPU number"))?;
        if cpu > CPU_ID_MAX {
            return Err(format!("CPU {cpu} is past the largest CPU number, {CPU_ID_MAX}"));
        }
        Ok(cpu)
    };
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (cpu(first)?, cpu(last)?);
                if first > last {
                    return Err(format!("{part:?}: the range goes backwards"));
                }
                cpus.extend(first..=last);
            }
            None => cpus.push(cpu(part)?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

#[cfg(test)]
mod cpu_list_tests {
    use super::*;

    #[test]
    fn a_cpu_list_reads_like_taskset_and_refuses_nonsense() {
        assert_eq!(parse_cpu_list("0-3,6,2"), Ok(vec![0, 1, 2, 3, 6]));
        assert_eq!(parse_cpu_list("7"), Ok(vec![7]));
        for bad in ["", "a", "3-1", "1,,2", "-1", "99999"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_allowed_cpus_are_this_process_s_affinity() {
        let cpus = allowed_cpus().unwrap();
        assert!(!cpus.is_empty());
        assert_eq!(cpus.len(), std::thread::available_parallelism().unwrap().get(), "{cpus:?}");
    }
}
