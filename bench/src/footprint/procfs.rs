//! What the orchestrator reads from `/proc` and the file system: a process's
//! resident memory, the machine's memory, a directory's size.

use std::fs;
use std::path::Path;

/// The value of a `Name:   1234 kB` line of a `/proc` status-like text
/// (`/proc/PID/status`, `/proc/meminfo`), in bytes. `None` if the field is
/// missing or not in kB.
pub fn kb_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        let mut words = rest.split_whitespace();
        let value: u64 = words.next()?.parse().ok()?;
        match words.next() {
            Some("kB") => value.checked_mul(1024),
            _ => None,
        }
    })
}

/// Resident set size of process `pid`, in bytes (`VmRSS` of its status).
pub fn rss_bytes(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    kb_field(&text, "VmRSS").ok_or_else(|| format!("{path} has no VmRSS line (a zombie?)"))
}

/// The resident high-water mark of process `pid` (`VmHWM`).
pub fn peak_rss_bytes(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    kb_field(&text, "VmHWM").ok_or_else(|| format!("{path} has no VmHWM line (a zombie?)"))
}

/// Bytes of the regular files under `dir` (0 if it does not exist).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&entry.path()),
            Ok(t) if t.is_file() => entry.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\ttqx\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t 1843200 kB\n\
        VmSize:\t 1835008 kB\nVmHWM:\t   52344 kB\nVmRSS:\t   48212 kB\nRssAnon:\t   40000 kB\nThreads:\t4\n";

    #[test]
    fn vm_rss_is_read_in_bytes() {
        assert_eq!(kb_field(STATUS, "VmRSS"), Some(48_212 * 1024));
        assert_eq!(kb_field(STATUS, "VmHWM"), Some(52_344 * 1024));
        // A prefix of another field's name is not that field.
        assert_eq!(kb_field(STATUS, "Rss"), None);
        assert_eq!(kb_field(STATUS, "Threads"), None, "not in kB");
        assert_eq!(kb_field(STATUS, "VmSwap"), None, "absent");
        assert_eq!(kb_field("MemTotal:       24633412 kB\n", "MemTotal"), Some(24_633_412 * 1024));
    }

    #[test]
    fn this_process_has_a_resident_size() {
        let rss = rss_bytes(std::process::id()).unwrap();
        assert!(rss > 1 << 20, "{rss}");
    }
}
