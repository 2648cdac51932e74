//! `tqx-bench fsync`: the disk's own sync time, the reference for `sync`-mode
//! latencies (the target: p50 of a `sync` enqueue on an idle server at
//! most 1.5× this).
//!
//! Each sample is one `pwrite` of `bytes` bytes into a preallocated file, then
//! `fdatasync`, timed together: what a write-ahead log pays per group commit.
//! The file is zero-filled first (written, not just `fallocate`d), because on
//! this machine a sync into written extents is ~35 % faster than into
//! unwritten ones or an append (../shared/RECIPES.md), and a log that recycles
//! its segments writes into written extents.
//!
//! `interval_us` paces the samples: each starts that long after the previous
//! one started (0: back to back). It matters: on this virtual machine an
//! `fdatasync` after the disk sat idle for a millisecond or more takes 3-5x
//! longer than one issued right after another (measured: ~110 µs back to back,
//! ~300 µs 2 ms apart, ~500 µs 20 ms apart). A request on an idle server
//! meets the idle disk, so its reference is a paced sync.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Samples at most (each takes a sync, ~0.1–0.5 ms here).
pub const COUNT_MAX: usize = 1_000_000;
/// Bytes per write at most.
pub const BYTES_MAX: usize = 64 << 20;
/// Pacing at most: one sample a second.
pub const INTERVAL_US_MAX: u64 = 1_000_000;

#[derive(Clone, Debug, Serialize)]
pub struct FsyncLatency {
    pub p50: f64,
    pub p99: f64,
    pub mean: f64,
}

/// What `tqx-bench fsync` prints.
#[derive(Clone, Debug, Serialize)]
pub struct FsyncReport {
    pub fdatasync_us: FsyncLatency,
    /// The pacing asked for (0: back to back).
    pub interval_us: u64,
}

/// Removes the scratch file however the measurement ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn measure(dir: &Path, count: usize, bytes: usize, interval_us: u64) -> std::io::Result<FsyncReport> {
    let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_string());
    if !(1..=COUNT_MAX).contains(&count) {
        return Err(invalid("--count must be 1 to 1,000,000"));
    }
    if !(1..=BYTES_MAX).contains(&bytes) {
        return Err(invalid("--bytes must be 1 to 64 MiB"));
    }
    if interval_us > INTERVAL_US_MAX {
        return Err(invalid("--interval-us must be at most 1,000,000"));
    }
    let scratch = Scratch(dir.join(format!("tqx-bench-fsync-{}.tmp", std::process::id())));
    let mut file = OpenOptions::new().read(true).write(true).create_new(true).open(&scratch.0)?;
    // Preallocate by writing zeros, in chunks, then sync once (not timed).
    let file_bytes = count as u64 * bytes as u64;
    let zeros = vec![0u8; 1 << 20];
    let mut left = file_bytes;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;

    let block = vec![0x5au8; bytes];
    let mut histogram = super::stats::new_histogram();
    let interval = Duration::from_micros(interval_us);
    let mut next = Instant::now();
    for i in 0..count {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        next += interval;
        let start = Instant::now();
        file.write_all_at(&block, i as u64 * bytes as u64)?;
        file.sync_data()?;
        histogram.saturating_record((start.elapsed().as_nanos() as u64).max(1));
    }
    let latency = super::stats::latency_us(&histogram);
    Ok(FsyncReport {
        fdatasync_us: FsyncLatency { p50: latency.p50, p99: latency.p99, mean: latency.mean },
        interval_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_and_cleans_up() {
        let dir = std::env::temp_dir().join(format!("tqx-bench-fsync-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let report = measure(&dir, 5, 4096, 0).unwrap();
        assert!(report.fdatasync_us.p50 > 0.0);
        let paced = measure(&dir, 3, 4096, 2_000).unwrap();
        assert_eq!(paced.interval_us, 2_000);
        assert!(measure(&dir, 1, 4096, INTERVAL_US_MAX + 1).is_err(), "pacing is bounded");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "the scratch file is removed");
        std::fs::remove_dir(&dir).unwrap();
    }
}
