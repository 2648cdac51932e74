//! Calls of `tqx-bench` (the load generator): `preload`, `run`, and `hold`,
//! whose `holding N connections` line on stderr is the moment to measure the
//! server. Each call's JSON line is returned as a `serde_json::Value`.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long `hold` may take to open its connections (10,000 through a listen
/// backlog of 4,096 can wait for SYN retransmissions, 1 s, 3 s, 7 s...).
const HOLD_OPEN_TIMEOUT: Duration = Duration::from_secs(120);

/// A finished `tqx-bench` call: its exit status, JSON line and stderr's tail.
pub struct Output {
    pub status: ExitStatus,
    pub json: Option<Value>,
    pub stderr_tail: String,
}

impl Output {
    /// The JSON line, if the call succeeded and printed one.
    pub fn ok(self, what: &str) -> Result<Value, String> {
        match self.json {
            Some(json) if self.status.success() => Ok(json),
            _ => Err(format!("{what}: tqx-bench {}: {}", self.status, self.stderr_tail)),
        }
    }
}

fn spawn(bin: &Path, args: &[String]) -> Result<Child, String> {
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {} {}: {e}", bin.display(), args.join(" ")))
}

fn read_all(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

/// Waits for `child` up to `timeout`, killing it past that.
fn wait(child: &mut Child, timeout: Duration, what: &str) -> Result<ExitStatus, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what}: tqx-bench did not finish within {timeout:?}; killed"));
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("{what}: waiting for tqx-bench: {e}")),
        }
    }
}

fn finish(status: ExitStatus, stdout: String, stderr: String) -> Output {
    let json = crate::shared::last_json_line(&stdout).and_then(|l| serde_json::from_str(l).ok());
    let stderr_tail = tqx_testkit::tail_lines(&stderr, 5, " | ");
    Output { status, json, stderr_tail }
}

/// Runs `tqx-bench ARGS` to its end (killed after `timeout`).
pub fn call(bin: &Path, args: &[String], timeout: Duration) -> Result<Output, String> {
    let what = args.first().cloned().unwrap_or_default();
    let output = crate::shared::run_with_timeout(bin, args, timeout).map_err(|e| format!("{what}: {e}"))?;
    Ok(finish(output.status, output.stdout, output.stderr))
}

/// When a `hold` ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldEnd {
    /// After its `--seconds` (its JSON line reports the hold).
    Natural,
    /// Killed as soon as `at_holding` returns (the hold is only a backdrop to
    /// what `at_holding` measures; its status is then the kill's).
    AfterMeasuring,
}

/// Runs `BIN ARGS` (`tqx-bench hold ...`, or `taskset ... tqx-bench hold
/// ...`); when it prints `holding N connections`, calls `at_holding(N)` (while
/// the connections are open) and returns its result with the call's output.
/// `at_holding` is not called if the line never comes.
pub fn hold<T>(
    bin: &Path,
    args: &[String],
    timeout: Duration,
    end: HoldEnd,
    at_holding: impl FnOnce(u64) -> T,
) -> Result<(Output, Option<T>), String> {
    let mut child = spawn(bin, args)?;
    let stdout = read_all(child.stdout.take());
    let stderr_pipe = child.stderr.take().ok_or("tqx-bench stderr not captured")?;
    let (tx, rx) = mpsc::channel::<u64>();
    let stderr = thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr_pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(count) = line.strip_prefix("holding ").and_then(|r| r.strip_suffix(" connections")) {
                if let Ok(count) = count.trim().parse::<u64>() {
                    let _ = tx.send(count);
                }
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    // Ends early (disconnected) if tqx-bench exits without the line.
    let measured = rx.recv_timeout(HOLD_OPEN_TIMEOUT).ok().map(at_holding);
    if end == HoldEnd::AfterMeasuring {
        let _ = child.kill();
    }
    let status = wait(&mut child, timeout, "hold")?;
    let output = finish(status, stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
    Ok((output, measured))
}

/// The number at `path` in a JSON object.
pub fn f64_at(json: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(json, |v, key| v.get(key))?.as_f64()
}

/// The unsigned integer at `path` in a JSON object.
pub fn u64_at(json: &Value, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(json, |v, key| v.get(key))?.as_u64()
}
