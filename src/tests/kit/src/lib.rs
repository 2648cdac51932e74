//! The one way tests and benchmarks start the real server: `tqx serve` on
//! loopback port 0 (HTTP and binary), its addresses read from its
//! `listening http=IP:PORT` / `listening binary=IP:PORT` lines, its readiness
//! from `GET /healthz` (503 while it recovers, 200 once it serves), stopped by
//! SIGTERM or killed by SIGKILL, and restarted on the same data directory.
//!
//! Used by the server's integration tests (`src/tests/support`, the crash
//! test `src/tests/crash.rs`) and by the benchmark harness (`bench/`).
//! Errors are `String`s that say what happened: a test panics with them, a
//! benchmark records them and goes on.
//!
//! The server prints its `listening` lines before recovery (so a client can
//! see it is up and recovering); [`Launch::start`] returns then, and
//! [`Tqx::wait_ready`] waits for recovery. A restart on the same data
//! directory is the same [`Launch`] started again ([`Tqx::launch`]);
//! [`Launch::start_retrying_address_in_use`] for fixed addresses a killed
//! server may still hold. [`TempDir`] and [`fresh_path`] give a data directory
//! removed afterwards; [`serve_until_exit`] runs a server that must refuse to
//! start.

use std::ffi::OsString;
use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Between two `GET /healthz` while waiting for readiness: short, since
/// recovery times are read from it (crash test, footprint benchmark), and
/// cheap, since the probe keeps one connection.
const HEALTH_POLL: Duration = Duration::from_millis(5);
/// Read and write timeout of the readiness probe's connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Between two checks of whether a signalled server has exited.
const EXIT_POLL: Duration = Duration::from_millis(10);
/// Largest `/healthz` reply body read (it is a few bytes).
const HEALTH_BODY_BYTES_MAX: usize = 64 << 10;

/// How to start `tqx serve`: the binary, its data directory, where its stderr
/// goes, its listen addresses and any further flags. Cloned to restart.
#[derive(Clone, Debug)]
pub struct Launch {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    http: String,
    binary: String,
    args: Vec<OsString>,
    before_exec: Option<fn() -> io::Result<()>>,
}

impl Launch {
    /// `BIN serve --http 127.0.0.1:0 --binary 127.0.0.1:0 --data DATA`, its
    /// stderr appended to `log` (created if needed). Always both listeners on
    /// free ports unless set: the binary default (7701) would collide between
    /// servers running at the same time.
    pub fn new(bin: impl Into<PathBuf>, data: impl Into<PathBuf>, log: impl Into<PathBuf>) -> Launch {
        Launch {
            bin: bin.into(),
            data: data.into(),
            log: log.into(),
            http: "127.0.0.1:0".into(),
            binary: "127.0.0.1:0".into(),
            args: Vec::new(),
            before_exec: None,
        }
    }

    /// `--http ADDR` instead of `127.0.0.1:0`.
    pub fn http(mut self, addr: impl Into<String>) -> Launch {
        self.http = addr.into();
        self
    }

    /// `--binary ADDR` instead of `127.0.0.1:0`.
    pub fn binary(mut self, addr: impl Into<String>) -> Launch {
        self.binary = addr.into();
        self
    }

    /// More flags, after the ones above.
    pub fn args<I, S>(mut self, args: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// A hook run in the child between fork and exec (e.g. raising its
    /// open-file limit). It must only make async-signal-safe calls.
    pub fn before_exec(mut self, hook: fn() -> io::Result<()>) -> Launch {
        self.before_exec = Some(hook);
        self
    }

    /// Spawns the server and waits (up to `listen_timeout`) for both its
    /// `listening` lines; it may still be recovering (see [`Tqx::wait_ready`]).
    pub fn start(&self, listen_timeout: Duration) -> Result<Tqx, StartError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| StartError::new(format!("cannot open {}: {e}", self.log.display()), &self.log, 0))?;
        let log_start = log.metadata().map_or(0, |m| m.len());
        let mut command = Command::new(&self.bin);
        command
            .arg("serve")
            .args(["--http", &self.http, "--binary", &self.binary])
            .arg("--data")
            .arg(&self.data)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if let Some(hook) = self.before_exec {
            // SAFETY: the hook runs between fork and exec; its contract (above)
            // is to make only async-signal-safe calls.
            unsafe { command.pre_exec(hook) };
        }
        let started = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|e| StartError::new(format!("cannot start {}: {e}", self.bin.display()), &self.log, log_start))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(StartError::new("stdout not captured".into(), &self.log, log_start));
        };
        // A thread reads stdout for the child's whole life, so that the server
        // never blocks on (or dies writing to) a full or closed pipe.
        let (sender, receiver) = mpsc::channel::<(bool, String)>();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let line = line.trim();
                if let Some(addr) = line.strip_prefix("listening http=") {
                    let _ = sender.send((true, addr.to_string()));
                } else if let Some(addr) = line.strip_prefix("listening binary=") {
                    let _ = sender.send((false, addr.to_string()));
                }
            }
        });
        let deadline = started + listen_timeout;
        let (mut http, mut binary) = (None, None);
        while http.is_none() || binary.is_none() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let (is_http, text) = match receiver.recv_timeout(remaining) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().map_or_else(|e| e.to_string(), |s| s.to_string());
                    let wanted = if http.is_none() { "http" } else { "binary" };
                    let what = format!(
                        "tqx serve did not print `listening {wanted}=IP:PORT` within {listen_timeout:?} (exit: {status})"
                    );
                    return Err(StartError::new(what, &self.log, log_start));
                }
            };
            let Ok(addr) = text.parse::<SocketAddr>() else {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StartError::new(format!("unparsable listening address {text:?}"), &self.log, log_start));
            };
            if is_http {
                http = Some(addr);
            } else {
                binary = Some(addr);
            }
        }
        let (Some(http), Some(binary)) = (http, binary) else { unreachable!("the loop ends once both are known") };
        Ok(Tqx {
            pid: child.id(),
            child: Mutex::new(child),
            http,
            binary,
            started,
            listening_after: started.elapsed(),
            launch: self.clone(),
            reaped: AtomicBool::new(false),
        })
    }

    /// [`Launch::start`], retrying (every 20 ms, until `deadline`) while an
    /// address is still in use: a server killed a moment ago may still hold
    /// its fixed listen address (its io_uring instance is torn down
    /// asynchronously after the process is reaped).
    pub fn start_retrying_address_in_use(
        &self,
        listen_timeout: Duration,
        deadline: Instant,
    ) -> Result<Tqx, StartError> {
        loop {
            match self.start(listen_timeout) {
                Err(failure) if failure.address_in_use() && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(20));
                }
                result => return result,
            }
        }
    }
}

/// Why `tqx serve` did not start; the server's log since this start explains
/// more (see [`StartError::log_since_start`]).
#[derive(Debug)]
pub struct StartError {
    pub what: String,
    log: PathBuf,
    log_start: u64,
}

impl StartError {
    fn new(what: String, log: &Path, log_start: u64) -> StartError {
        StartError { what, log: log.to_path_buf(), log_start }
    }

    /// What this start wrote to the log.
    pub fn log_since_start(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.get(self.log_start as usize..).unwrap_or_default().to_string()
    }

    /// Whether the server said a listen address was taken.
    pub fn address_in_use(&self) -> bool {
        self.log_since_start().contains("Address already in use")
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

/// A running `tqx serve`. Dropping it kills it (SIGKILL) and reaps it; it
/// never removes the data directory (see [`TempDir`]). Every method takes
/// `&self`, so a test can share it between threads.
pub struct Tqx {
    /// Locked only for a `try_wait`, `kill` or `wait`, never across a sleep.
    child: Mutex<Child>,
    pid: u32,
    pub http: SocketAddr,
    pub binary: SocketAddr,
    /// When it was spawned.
    pub started: Instant,
    /// From spawn to both `listening` lines.
    pub listening_after: Duration,
    launch: Launch,
    /// Whether `child` has been waited for (its pid may then be reused).
    reaped: AtomicBool,
}

impl Tqx {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How it was started: `tqx.kill()` (or `stop`), then
    /// `tqx.launch().start(timeout)` restarts it on the same data directory.
    pub fn launch(&self) -> &Launch {
        &self.launch
    }

    fn child(&self) -> MutexGuard<'_, Child> {
        // A panic elsewhere while it was held leaves the child as it was.
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Polls `GET /healthz` until it answers 200; returns the time since
    /// spawn (which includes recovery). Fails if the server exits, answers
    /// anything but 200 or 503 (`recovering`), or is not ready by `timeout`.
    pub fn wait_ready(&self, timeout: Duration) -> Result<Duration, String> {
        let deadline = Instant::now() + timeout;
        let mut probe = HealthProbe::default();
        loop {
            if let Some(status) = self.try_wait() {
                return Err(format!("exited during recovery with {status}"));
            }
            match probe.status(self.http) {
                Ok((200, _)) => return Ok(self.started.elapsed()),
                Ok((503, _)) | Err(_) => {}
                Ok((status, body)) => return Err(format!("GET /healthz answered {status}: {body}")),
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after {timeout:?}"));
            }
            thread::sleep(HEALTH_POLL);
        }
    }

    /// Its exit status if it has exited (reaped), else None.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        let status = self.child().try_wait().ok().flatten();
        if status.is_some() {
            self.reaped.store(true, Ordering::SeqCst);
        }
        status
    }

    pub fn is_running(&self) -> bool {
        self.try_wait().is_none()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`, `libc::SIGSTOP`); an error if it
    /// has been reaped.
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        // Held across the check and the kill(2), so no reap comes between.
        let _child = self.child();
        if self.reaped.load(Ordering::SeqCst) {
            return Err(io::Error::other("the server has exited"));
        }
        let pid = libc::pid_t::try_from(self.pid).map_err(io::Error::other)?;
        // SAFETY: kill(2) on our own child, which has not been reaped (only
        // this value reaps it, and records it), so the pid is still ours.
        if unsafe { libc::kill(pid, signal) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Waits up to `timeout` for it to exit; its exit status, or None.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(EXIT_POLL);
        }
    }

    /// SIGKILL (a crash: nothing flushed or closed cleanly), then reaps it.
    /// Returns the instant just before the signal; an error if it had already
    /// exited on its own (with its status).
    pub fn kill(&self) -> Result<Instant, String> {
        if let Some(status) = self.try_wait() {
            return Err(format!("exited on its own with {status} before the kill"));
        }
        let mut child = self.child();
        let at = Instant::now();
        child.kill().map_err(|e| format!("killing tqx: {e}"))?;
        child.wait().map_err(|e| format!("waiting for tqx: {e}"))?;
        self.reaped.store(true, Ordering::SeqCst);
        Ok(at)
    }

    /// SIGTERM, then waits up to `timeout` for it to exit; if it has not,
    /// SIGKILL. `Ok(status)` when it exited on the signal (or before),
    /// `Err` (saying so) when it had to be killed.
    pub fn stop(&self, timeout: Duration) -> Result<ExitStatus, String> {
        if let Some(status) = self.try_wait() {
            return Ok(status);
        }
        let _ = self.signal(libc::SIGTERM);
        if let Some(status) = self.wait_exit(timeout) {
            return Ok(status);
        }
        let _ = self.kill();
        Err(format!("did not stop on SIGTERM within {timeout:?}; killed"))
    }

    /// What the server wrote to its log (stderr) so far, all starts included.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.launch.log).unwrap_or_default()
    }

    /// The last `lines` non-blank lines of its log, joined by `separator`.
    pub fn log_tail(&self, lines: usize, separator: &str) -> String {
        tail_lines(&self.log_text(), lines, separator)
    }
}

impl Drop for Tqx {
    fn drop(&mut self) {
        // Never leave a server behind, whatever ended the test.
        if self.is_running() {
            let _ = self.kill();
        }
    }
}

/// The last `lines` non-blank lines of `text`, joined by `separator`.
pub fn tail_lines(text: &str, lines: usize, separator: &str) -> String {
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join(separator)
}

/// `GET /healthz` over one keep-alive connection, reopened after an error.
#[derive(Default)]
struct HealthProbe {
    connection: Option<BufReader<TcpStream>>,
}

impl HealthProbe {
    /// The reply's status and body.
    fn status(&mut self, addr: SocketAddr) -> io::Result<(u16, String)> {
        let result = self.try_status(addr);
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    fn try_status(&mut self, addr: SocketAddr) -> io::Result<(u16, String)> {
        if self.connection.is_none() {
            let stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
            stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
            self.connection = Some(BufReader::new(stream));
        }
        let Some(reader) = self.connection.as_mut() else { unreachable!("opened above") };
        reader.get_mut().write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")?;
        let (status, body) = read_response(reader, HEALTH_BODY_BYTES_MAX)?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// Reads one HTTP/1.1 response (the server's: framed by `Content-Length`,
/// never chunked) from a keep-alive connection: its status and body. An
/// error if the connection ends first, or the reply is malformed or has a
/// body over `body_bytes_max`.
pub fn read_response(reader: &mut impl BufRead, body_bytes_max: usize) -> io::Result<(u16, Vec<u8>)> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let status = line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| invalid(format!("bad status line {line:?}")))?;
    let mut content_length = None;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse::<usize>().ok();
            }
        }
    }
    let length = content_length
        .filter(|length| *length <= body_bytes_max)
        .ok_or_else(|| invalid("reply without a usable Content-Length".into()))?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((status, body))
}

static DIR_COUNT: AtomicU64 = AtomicU64::new(0);

/// A new, empty directory's path under the system's temp dir, unique in this
/// machine's run (process id, a counter, the time): `PREFIX-PID-N-NANOS`.
/// Not created.
pub fn fresh_path(prefix: &str) -> PathBuf {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        DIR_COUNT.fetch_add(1, Ordering::SeqCst)
    ))
}

/// A directory removed (with everything in it) when dropped.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `path` (and its parents).
    pub fn create(path: impl Into<PathBuf>) -> io::Result<TempDir> {
        let path = path.into();
        std::fs::create_dir_all(&path)?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Runs `BIN serve ARGS` (no `--http`/`--binary`/`--data` added) until it
/// exits, or kills it after `timeout`: (exit status if it exited, stdout,
/// stderr). For the tests of a server that must refuse to start.
pub fn serve_until_exit(bin: &Path, args: &[OsString], timeout: Duration) -> (Option<ExitStatus>, String, String) {
    let mut command = Command::new(bin);
    command.arg("serve").args(args);
    match output_within(&mut command, timeout) {
        Ok(output) => (output.status, output.stdout, output.stderr),
        Err(e) => (None, String::new(), format!("cannot start {}: {e}", bin.display())),
    }
}

/// What a program run by [`output_within`] printed, and how it ended.
pub struct Output {
    /// None: it did not exit within the timeout and was killed.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` (stdin closed) to its end, capturing stdout and stderr
/// (each read by a thread, so neither pipe fills); kills it after `timeout`.
pub fn output_within(command: &mut Command, timeout: Duration) -> io::Result<Output> {
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(EXIT_POLL);
    };
    Ok(Output { status, stdout: stdout.join().unwrap_or_default(), stderr: stderr.join().unwrap_or_default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_response_takes_one_reply_by_content_length_and_leaves_the_next() {
        let bytes = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\nabHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let mut reader = BufReader::new(&bytes[..]);
        assert_eq!(read_response(&mut reader, 16).unwrap(), (503, b"ab".to_vec()));
        assert_eq!(read_response(&mut reader, 16).unwrap(), (200, Vec::new()));
        assert_eq!(read_response(&mut reader, 16).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn read_response_refuses_a_body_over_the_bound_or_without_a_length() {
        let over = b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n";
        assert_eq!(read_response(&mut &over[..], 16).unwrap_err().kind(), io::ErrorKind::InvalidData);
        let none = b"HTTP/1.1 200 OK\r\n\r\n";
        assert_eq!(read_response(&mut &none[..], 16).unwrap_err().kind(), io::ErrorKind::InvalidData);
        let bad = b"SSH-2.0\r\n\r\n";
        assert_eq!(read_response(&mut &bad[..], 16).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn tail_lines_skips_blank_lines() {
        assert_eq!(tail_lines("a\n\nb\n  \nc\n", 2, " | "), "b | c");
        assert_eq!(tail_lines("", 3, "\n"), "");
    }

    #[test]
    fn a_temp_dir_is_removed_when_dropped() {
        let dir = TempDir::create(fresh_path("tqx-testkit-unit")).unwrap();
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists());
    }
}
