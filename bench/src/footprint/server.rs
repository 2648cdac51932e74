//! A `tqx serve` started for one measurement: spawned with a raised open-file
//! limit, its addresses read from its `listening` lines, its readiness from
//! `GET /healthz`, its memory from `/proc`. Dropping it kills it.

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::load::fdlimit;

/// How long a server may take to print its `listening` lines.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Between two `GET /healthz` while waiting for readiness: short, since the
/// recovery time is read from it.
const HEALTH_POLL: Duration = Duration::from_millis(10);

pub struct Tqx {
    child: Child,
    started: Instant,
    pub http: SocketAddr,
    pub binary: SocketAddr,
    /// From spawn to both `listening` lines.
    pub listening_after: Duration,
    log: PathBuf,
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
        let log_file = File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let mut command = Command::new(bin);
        command
            .args(["serve", "--durability", durability, "--http", "127.0.0.1:0", "--binary", "127.0.0.1:0"])
            .arg("--data")
            .arg(data)
            // Per-connection logging would tax the 10,000-connection holds.
            .args(["--log-level", log_level])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        // SAFETY: the hook runs between fork and exec and only calls
        // getrlimit/setrlimit (async-signal-safe, no allocation, no lock).
        unsafe {
            command.pre_exec(|| fdlimit::raise_nofile(fdlimit::NOFILE_WANTED).map(|_| ()));
        }
        let started = Instant::now();
        let mut child = command.spawn().map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("tqx stdout not captured")?;
        let mut server = Tqx {
            child,
            started,
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            binary: SocketAddr::from(([127, 0, 0, 1], 0)),
            listening_after: Duration::ZERO,
            log: log.to_path_buf(),
        };
        let (http, binary) =
            crate::report::run::listening_addrs(stdout, started + LISTEN_TIMEOUT).ok_or_else(|| {
                format!("tqx printed no listening lines within {LISTEN_TIMEOUT:?}: {}", server.log_tail())
            })?;
        server.http = http;
        server.binary = binary;
        server.listening_after = started.elapsed();
        Ok(server)
    }

    /// Polls `GET /healthz` until it answers 200; returns the time since
    /// spawn.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Duration, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("tqx exited while starting ({status}): {}", self.log_tail()));
            }
            if healthz_ok(self.http) {
                return Ok(self.started.elapsed());
            }
            if Instant::now() > deadline {
                return Err(format!("tqx not ready after {timeout:?}: {}", self.log_tail()));
            }
            thread::sleep(HEALTH_POLL);
        }
    }

    /// Resident memory now, in bytes; an error if the server has exited.
    pub fn rss(&mut self) -> Result<u64, String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(format!("tqx has exited ({status}): {}", self.log_tail()));
        }
        super::procfs::rss_bytes(self.child.id())
    }

    /// The resident high-water mark (`VmHWM`).
    pub fn peak_rss(&mut self) -> Result<u64, String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(format!("tqx has exited ({status}): {}", self.log_tail()));
        }
        super::procfs::peak_rss_bytes(self.child.id())
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no shutdown, no final checkpoint (the recovery measurement).
    pub fn kill(mut self) -> Result<(), String> {
        self.child.kill().map_err(|e| format!("killing tqx: {e}"))?;
        self.child.wait().map_err(|e| format!("waiting for tqx: {e}"))?;
        Ok(())
    }

    /// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`].
    pub fn stop(mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
                // SAFETY: plain kill(2) on our own child's pid, not yet reaped.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let deadline = Instant::now() + STOP_TIMEOUT;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
        }
        // Drop kills it if it is still running.
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

impl Drop for Tqx {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// True if `GET /healthz` on `addr` answers 200.
pub fn healthz_ok(addr: SocketAddr) -> bool {
    crate::report::run::probe(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 200",
    )
}
