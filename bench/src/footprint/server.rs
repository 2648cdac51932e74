//! A `tqx serve` started for one measurement by the test kit
//! (`src/tests/kit`, the one way tests and benchmarks start the server):
//! spawned with a raised open-file limit, its log at warnings only; its
//! memory read from `/proc`. Dropping it kills it.

use std::path::Path;
use std::time::Duration;

use crate::load::fdlimit;

/// How long a server may take to print its `listening` lines.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of the log quoted in an error.
const LOG_TAIL_LINES: usize = 5;

pub struct Tqx {
    tqx: tqx_testkit::Tqx,
    pub binary: std::net::SocketAddr,
    /// From spawn to both `listening` lines.
    pub listening_after: Duration,
}

impl Tqx {
    /// Starts `tqx serve --durability DURABILITY --data DATA` on free loopback
    /// ports, its log (stderr, warnings only) in `log`, and waits for its
    /// `listening` lines (not for readiness: see [`Tqx::wait_ready`]).
    pub fn start(bin: &Path, durability: &str, data: &Path, log: &Path) -> Result<Tqx, String> {
        Tqx::start_with(bin, durability, data, log, "warn", &[])
    }

    /// [`Tqx::start`] with another log level and more flags.
    pub fn start_with(
        bin: &Path,
        durability: &str,
        data: &Path,
        log: &Path,
        log_level: &str,
        flags: &[&str],
    ) -> Result<Tqx, String> {
        let tqx = tqx_testkit::Launch::new(bin, data, log)
            .args(["--durability", durability])
            // Per-connection logging would tax the 10,000-connection holds.
            .args(["--log-level", log_level])
            .args(flags.iter().copied())
            // Only getrlimit/setrlimit: async-signal-safe, no allocation, no lock.
            .before_exec(|| fdlimit::raise_nofile(fdlimit::NOFILE_WANTED).map(|_| ()))
            .start(LISTEN_TIMEOUT)
            .map_err(|failure| {
                format!("{failure}: {}", tqx_testkit::tail_lines(&failure.log_since_start(), LOG_TAIL_LINES, " | "))
            })?;
        Ok(Tqx { binary: tqx.binary, listening_after: tqx.listening_after, tqx })
    }

    /// Polls `GET /healthz` until it answers 200; returns the time since
    /// spawn.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Duration, String> {
        self.tqx.wait_ready(timeout).map_err(|what| format!("tqx {what}: {}", self.log_tail()))
    }

    /// Resident memory now, in bytes; an error if the server has exited.
    pub fn rss(&mut self) -> Result<u64, String> {
        self.running()?;
        super::procfs::rss_bytes(self.tqx.pid())
    }

    /// The resident high-water mark (`VmHWM`).
    pub fn peak_rss(&mut self) -> Result<u64, String> {
        self.running()?;
        super::procfs::peak_rss_bytes(self.tqx.pid())
    }

    fn running(&self) -> Result<(), String> {
        match self.tqx.try_wait() {
            Some(status) => Err(format!("tqx has exited ({status}): {}", self.log_tail())),
            None => Ok(()),
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        self.tqx.log_text()
    }

    /// SIGKILL: no shutdown, no final checkpoint (the recovery measurement).
    pub fn kill(self) -> Result<(), String> {
        self.tqx.kill().map(|_| ())
    }

    /// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`].
    pub fn stop(self) {
        let _ = self.tqx.stop(STOP_TIMEOUT);
    }

    pub fn log_tail(&self) -> String {
        self.tqx.log_tail(LOG_TAIL_LINES, " | ")
    }
}
