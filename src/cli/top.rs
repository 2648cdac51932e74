//! `tqx top`: a live view of the server from successive `GET /v1/stats`
//! documents (the binary `stats` request with `--binary`): each queue's depth
//! by state, and rates per second from the difference of two documents'
//! counters over the time between them (the first frame, and `--once`, show
//! the averages since the server started, from its `uptime_seconds`).
//!
//! Plain ANSI: on a terminal the view takes the alternate screen and redraws
//! in place every `--interval-ms`; standard input is read unbuffered, without
//! echo or signals (termios), so `q` or Ctrl-C quits and the terminal is
//! restored on the way out. Not on a terminal, each frame is printed after
//! the last, without escape codes. A refresh that fails is shown in the frame
//! and retried at the next tick; only the first one ends the command.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;

use super::client::ServerOpt;
use super::exit::Failure;
use super::output::{table, STATES};
use super::transport::{Op, Transport};

#[derive(Args, Debug)]
pub(super) struct TopArgs {
    /// Print one frame and exit (rates are the averages since the server started).
    #[arg(long)]
    once: bool,
    /// Time between refreshes.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    interval_ms: u64,
    #[command(flatten)]
    server: ServerOpt,
}

/// The task events shown as rates, as `/v1/stats` names them.
const EVENTS: [&str; 6] = ["enqueued", "leased", "completed", "failed", "dead", "retried"];

/// One stats document and when it was taken.
struct Sample {
    stats: Value,
    at: Instant,
}

pub(super) fn run(args: TopArgs) -> Result<(), Failure> {
    let transport = Transport::open(&args.server.target())?;
    let server_name = transport.server_name();
    let sample = |transport: &Transport| -> Result<(Vec<u8>, Sample), Failure> {
        let body = transport.call(Op::Stats)?;
        let stats = serde_json::from_slice(&body)
            .map_err(|e| Failure::new(super::exit::Exit::Error, format!("the stats document is not JSON: {e}")))?;
        Ok((body, Sample { stats, at: Instant::now() }))
    };
    // A server that cannot be asked ends the command before the terminal is touched.
    let (body, first) = sample(&transport)?;
    if args.once {
        if args.server.json {
            println!("{}", String::from_utf8_lossy(&body));
        } else {
            print!("{}", frame(&server_name, &first, None, None, usize::MAX));
        }
        return Ok(());
    }
    // JSON lines are a stream for another program: no alternate screen for them.
    let screen = Screen::enter(!args.server.json);
    if args.server.json {
        println!("{}", String::from_utf8_lossy(&body));
    } else {
        screen.draw(&frame(&server_name, &first, None, None, terminal_rows()));
    }
    let interval = Duration::from_millis(args.interval_ms);
    let mut previous = first;
    loop {
        if screen.wait_for_quit(previous.at + interval) {
            return Ok(());
        }
        match sample(&transport) {
            Ok((body, next)) => {
                if args.server.json {
                    println!("{}", String::from_utf8_lossy(&body));
                } else {
                    screen.draw(&frame(&server_name, &next, Some(&previous), None, terminal_rows()));
                }
                previous = next;
            }
            Err(failure) => {
                // Keep the last numbers on screen, say what failed, try again next tick.
                previous.at = Instant::now();
                if !args.server.json {
                    let error = failure.message.lines().next().unwrap_or_default().to_string();
                    screen.draw(&frame(&server_name, &previous, None, Some(&error), terminal_rows()));
                } else {
                    eprintln!("tqx top: {}", failure.message);
                }
            }
        }
    }
}

fn number(value: &Value) -> f64 {
    value.as_f64().unwrap_or(0.0)
}

/// Requests answered so far, all protocols, operations and outcomes.
fn requests_total(stats: &Value) -> f64 {
    stats["requests"].as_array().map_or(0.0, |entries| entries.iter().map(|e| number(&e["count"])).sum())
}

/// `count` per second: over the time between the two samples, or since the
/// server started without a previous one.
fn rate(now: f64, before: Option<f64>, seconds: f64) -> String {
    let delta = now - before.unwrap_or(0.0);
    if seconds <= 0.0 {
        return "-".to_string();
    }
    format!("{:.1}", delta.max(0.0) / seconds)
}

/// One screen: the server line, the rates, the connections and one row per
/// queue (at most `rows_max` lines in all; a last line says how many more).
fn frame(server: &str, now: &Sample, previous: Option<&Sample>, error: Option<&str>, rows_max: usize) -> String {
    let stats = &now.stats;
    let (seconds, over) = match previous {
        Some(previous) => {
            let seconds = now.at.duration_since(previous.at).as_secs_f64();
            (seconds, format!("per second over the last {seconds:.1} s"))
        }
        None => (number(&stats["uptime_seconds"]), "per second, averaged since the server started".to_string()),
    };
    let before = |path: &dyn Fn(&Value) -> f64| previous.map(|p| path(&p.stats));
    let mut lines = vec![
        format!(
            "tqx top  {server}  TaskQueueX {} ({} durability), up {}  (q quits)",
            stats["version"].as_str().unwrap_or("?"),
            stats["durability"].as_str().unwrap_or("?"),
            uptime(number(&stats["uptime_seconds"]))
        ),
        String::new(),
    ];
    if let Some(error) = error {
        lines.push(format!("refresh failed: {error} (retrying)"));
    }
    let mut rates = format!("requests {}", rate(requests_total(stats), before(&requests_total), seconds));
    for event in EVENTS {
        let read = |s: &Value| number(&s["task_events"][event]);
        rates.push_str(&format!("  {event} {}", rate(read(stats), before(&read), seconds)));
    }
    lines.push(format!("{rates}   ({over})"));
    let connections: Vec<String> = ["http", "binary"]
        .iter()
        .map(|protocol| format!("{protocol} {}", number(&stats["connections"][protocol]["open"])))
        .collect();
    lines.push(format!(
        "connections open: {}   queues: {}",
        connections.join(", "),
        stats["queues_count"].as_u64().unwrap_or(0)
    ));
    lines.push(String::new());

    let queues = stats["queues"].as_array().cloned().unwrap_or_default();
    let mut header = vec!["queue"];
    header.extend(STATES);
    let room = rows_max.saturating_sub(lines.len() + 2).max(1);
    let shown = if queues.len() > room { room.saturating_sub(1).max(1) } else { queues.len() };
    let rows: Vec<Vec<String>> = queues
        .iter()
        .take(shown)
        .map(|queue| {
            let mut row = vec![queue["name"].as_str().unwrap_or("?").to_string()];
            row.extend(STATES.iter().map(|state| format!("{}", number(&queue["counts"][state]))));
            row
        })
        .collect();
    if rows.is_empty() {
        lines.push("no queues".to_string());
    } else {
        lines.extend(table(&header, &rows).lines().map(str::to_string));
    }
    if queues.len() > shown {
        lines.push(format!("… {} more queues (a taller terminal shows them)", queues.len() - shown));
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

fn uptime(seconds: f64) -> String {
    let seconds = seconds.max(0.0) as u64;
    match seconds {
        0..=3599 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        3600..=86_399 => format!("{}h{:02}m", seconds / 3600, seconds / 60 % 60),
        _ => format!("{}d{:02}h", seconds / 86_400, seconds / 3600 % 24),
    }
}

/// The terminal's height in lines (24 when it cannot be asked).
fn terminal_rows() -> usize {
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct given.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let asked = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    if asked == 0 && size.ws_row > 0 {
        usize::from(size.ws_row)
    } else {
        24
    }
}

/// The terminal while `top` runs: the alternate screen (stdout a terminal,
/// frames redrawn) and stdin without line buffering, echo or signals (stdin a terminal);
/// both restored when dropped.
struct Screen {
    alternate: bool,
    saved: Option<libc::termios>,
}

impl Screen {
    fn enter(redraw: bool) -> Screen {
        let alternate = redraw && std::io::stdout().is_terminal();
        let mut saved = None;
        if std::io::stdin().is_terminal() {
            // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios they fill and read.
            let mut termios: libc::termios = unsafe { std::mem::zeroed() };
            if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut termios) } == 0 {
                let mut raw = termios;
                // ISIG off: Ctrl-C arrives as a byte, so the quit path restores the terminal.
                raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG);
                raw.c_cc[libc::VMIN] = 0;
                raw.c_cc[libc::VTIME] = 0;
                if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } == 0 {
                    saved = Some(termios);
                }
            }
        }
        if alternate {
            // Alternate screen, cursor hidden.
            print!("\x1b[?1049h\x1b[?25l");
            let _ = std::io::stdout().flush();
        }
        Screen { alternate, saved }
    }

    /// Redraws: in place on a terminal (each line cleared to its end, then
    /// the rest of the screen), else after the previous frame.
    fn draw(&self, frame: &str) {
        let mut out = std::io::stdout().lock();
        if self.alternate {
            let mut text = String::from("\x1b[H");
            for line in frame.lines() {
                text.push_str(line);
                text.push_str("\x1b[K\n");
            }
            text.push_str("\x1b[J");
            let _ = out.write_all(text.as_bytes());
        } else {
            let _ = writeln!(out);
            let _ = out.write_all(frame.as_bytes());
        }
        let _ = out.flush();
    }

    /// Waits until `deadline`; true if q, Q, Ctrl-C or Ctrl-D was typed.
    fn wait_for_quit(&self, deadline: Instant) -> bool {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if self.saved.is_none() {
                std::thread::sleep(left);
                return false;
            }
            let mut poll = libc::pollfd { fd: libc::STDIN_FILENO, events: libc::POLLIN, revents: 0 };
            let timeout_ms = left.as_millis().clamp(1, 60_000) as libc::c_int;
            // SAFETY: one pollfd, then a read into a buffer of its length.
            if unsafe { libc::poll(&mut poll, 1, timeout_ms) } > 0 {
                let mut keys = [0u8; 64];
                let read = unsafe { libc::read(libc::STDIN_FILENO, keys.as_mut_ptr().cast(), keys.len()) };
                let keys = &keys[..read.max(0) as usize];
                if keys.iter().any(|key| matches!(key, b'q' | b'Q' | 0x03 | 0x04)) {
                    return true;
                }
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        if self.alternate {
            print!("\x1b[?25h\x1b[?1049l");
            let _ = std::io::stdout().flush();
        }
        if let Some(termios) = &self.saved {
            // SAFETY: restores the settings tcgetattr gave.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, termios) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_frame_shows_each_queue_by_state_and_rates_from_two_samples() {
        let stats = |enqueued: u64, ready: u64| {
            json!({"version": "0.1.0", "durability": "sync", "uptime_seconds": 10.0,
                   "requests": [{"count": 20}], "task_events": {"enqueued": enqueued},
                   "connections": {"http": {"open": 1}, "binary": {"open": 0}}, "queues_count": 1,
                   "queues": [{"name": "emails", "counts": {"waiting": 0, "delayed": 0, "ready": ready,
                               "leased": 1, "completed": 2, "dead": 3, "cancelled": 0}}]})
        };
        let start = Instant::now();
        let first = Sample { stats: stats(10, 5), at: start };
        let text = frame("http://x", &first, None, None, usize::MAX);
        assert!(text.contains("enqueued 1.0") && text.contains("averaged since the server started"), "{text}");
        let second = Sample { stats: stats(30, 7), at: start + Duration::from_secs(2) };
        let text = frame("http://x", &second, Some(&first), None, usize::MAX);
        assert!(text.contains("enqueued 10.0") && text.contains("over the last 2.0 s"), "{text}");
        let row = text.lines().find(|line| line.starts_with("emails")).expect(&text);
        assert_eq!(row.split_whitespace().collect::<Vec<_>>(), ["emails", "0", "0", "7", "1", "2", "3", "0"]);
    }
}
