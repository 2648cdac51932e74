//! Counting and timing: the measurement window, per-connection counters and
//! latency histograms, and the report they merge into.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in nanoseconds, from 1 ns to this, with 3 significant
/// digits (a bucket is at most 0.1 % wide). Larger values are clamped to it.
/// Each histogram takes about 200 KiB, all of it resident (hdrhistogram
/// writes its counts array when it allocates it): hence one per run, shared
/// by its connections ([`SharedHistogram`]).
const LATENCY_NS_MAX: u64 = 100_000_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// Error messages printed on stderr per run; the rest are only counted.
const ERRORS_LOGGED_MAX: usize = 10;
static ERRORS_LOGGED: AtomicUsize = AtomicUsize::new(0);

/// What is counted: replies that arrive in `[measure_start, end)`. The warmup
/// before it is run the same way but not counted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub measure_start: Instant,
    pub end: Instant,
}

impl Window {
    pub(crate) fn counts(&self, now: Instant) -> bool {
        now >= self.measure_start && now < self.end
    }
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, SIGNIFICANT_DIGITS).expect("valid histogram bounds")
}

/// A latency histogram shared by every connection of a run. The load
/// generator is one thread, so sharing needs no lock and records exactly what
/// per-connection histograms merged at the end would; and 10,000 connections
/// hold one ~200 KiB histogram instead of 2 GiB of them, whose zeroing would
/// also stall the start of the run.
pub(crate) type SharedHistogram = Rc<RefCell<Histogram<u64>>>;

pub(crate) fn shared_histogram() -> SharedHistogram {
    Rc::new(RefCell::new(new_histogram()))
}

/// One connection's counts (or one storm loop's).
pub(crate) struct ConnStats {
    pub window: Window,
    pub histogram: SharedHistogram,
    pub ops: u64,
    pub tasks: u64,
    pub errors: u64,
}

impl ConnStats {
    /// Counts with a histogram of their own.
    pub(crate) fn new(window: Window) -> ConnStats {
        ConnStats::sharing(window, shared_histogram())
    }

    /// Counts recording latencies into `histogram`, shared with others.
    pub(crate) fn sharing(window: Window, histogram: SharedHistogram) -> ConnStats {
        ConnStats { window, histogram, ops: 0, tasks: 0, errors: 0 }
    }

    /// An op that started at `start` (its send time, or its scheduled send time
    /// in the open loop) finished at `now`.
    pub(crate) fn op(&mut self, start: Instant, now: Instant) {
        if self.window.counts(now) {
            self.ops += 1;
            let ns = now.saturating_duration_since(start).as_nanos().min(u128::from(LATENCY_NS_MAX)) as u64;
            self.histogram.borrow_mut().saturating_record(ns.max(1));
        }
    }

    /// `count` tasks moved (enqueued, or completed in the cycle scenarios).
    pub(crate) fn tasks(&mut self, now: Instant, count: u64) {
        if self.window.counts(now) {
            self.tasks += count;
        }
    }

    /// The system answered an error (or the connection broke).
    pub(crate) fn error(&mut self, now: Instant, message: &str) {
        if self.window.counts(now) {
            self.errors += 1;
        }
        log_error(message);
    }
}

pub(crate) fn log_error(message: &str) {
    let logged = ERRORS_LOGGED.fetch_add(1, Ordering::Relaxed);
    if logged < ERRORS_LOGGED_MAX {
        eprintln!("tqx-bench: error: {message}");
    } else if logged == ERRORS_LOGGED_MAX {
        eprintln!("tqx-bench: more errors; only counted from now on");
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// The one JSON line `tqx-bench run` prints.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub system: &'static str,
    pub scenario: &'static str,
    pub connections: usize,
    pub pipeline: usize,
    /// Length of the measurement window.
    pub seconds: f64,
    pub ops: u64,
    pub ops_per_s: f64,
    pub tasks_per_s: f64,
    pub errors: u64,
    pub latency_us: Latency,
    pub offered_rate: Option<f64>,
    /// CPU time the load generator's thread used during the window, as a
    /// fraction of one core: near 1.0, the client (not the server) was the limit.
    pub client_cpu: f64,
    /// CPU time of the server's process (all its threads) during the window,
    /// in cores (`--server-pid`; absent otherwise). On a machine the client
    /// shares, `server_cpu / ops_per_s` is the server's cost per op, which
    /// compares servers even when the client sets the pace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu: Option<f64>,
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// Percentiles of `histogram` (nanoseconds) in microseconds.
pub(crate) fn latency_us(histogram: &Histogram<u64>) -> Latency {
    if histogram.is_empty() {
        return Latency { p50: 0.0, p99: 0.0, p999: 0.0, max: 0.0, mean: 0.0 };
    }
    let us = |ns: u64| round(ns as f64 / 1_000.0, 1);
    Latency {
        p50: us(histogram.value_at_quantile(0.5)),
        p99: us(histogram.value_at_quantile(0.99)),
        p999: us(histogram.value_at_quantile(0.999)),
        max: us(histogram.max()),
        mean: round(histogram.mean() / 1_000.0, 1),
    }
}

/// Sums the connections' counts; a histogram shared by several is added once.
pub(crate) fn merge(stats: &[ConnStats]) -> (Histogram<u64>, u64, u64, u64) {
    let mut histogram = new_histogram();
    let mut added = HashSet::new();
    let (mut ops, mut tasks, mut errors) = (0, 0, 0);
    for s in stats {
        if added.insert(Rc::as_ptr(&s.histogram)) {
            histogram.add(&*s.histogram.borrow()).expect("histograms with the same bounds");
        }
        ops += s.ops;
        tasks += s.tasks;
        errors += s.errors;
    }
    (histogram, ops, tasks, errors)
}

/// CPU time this thread has used, in seconds.
pub(crate) fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write into.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if result != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// CPU time a process has used (all its threads, user and system), from
/// `/proc/PID/stat`; `None` if it cannot be read (gone, or not Linux).
pub(crate) fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / ticks_per_s.max(1) as f64)
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command
/// name (field 2) is in parentheses and may hold spaces, so fields are
/// counted after its closing parenthesis.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // fields 3..=13
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

pub(crate) fn rounded(value: f64, decimals: i32) -> f64 {
    round(value, decimals)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_ticks_are_fields_14_and_15_even_with_spaces_in_the_name() {
        let stat = "4242 (tqx worker (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(super::parse_cpu_ticks(stat), Some(325));
        assert_eq!(super::parse_cpu_ticks("4242 (tqx) S 1"), None, "a truncated line is no figure");
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let seconds = super::process_cpu_seconds(std::process::id()).expect("own /proc/PID/stat");
        assert!(seconds >= 0.0);
        assert_eq!(super::process_cpu_seconds(u32::MAX), None, "no such process");
    }

    use super::*;
    use std::time::Duration;

    #[test]
    fn only_the_window_counts() {
        let t0 = Instant::now();
        let window = Window { measure_start: t0 + Duration::from_secs(1), end: t0 + Duration::from_secs(2) };
        let mut stats = ConnStats::new(window);
        stats.op(t0, t0 + Duration::from_millis(500));
        stats.op(t0 + Duration::from_millis(1_000), t0 + Duration::from_millis(1_250));
        stats.op(t0, t0 + Duration::from_millis(2_000));
        stats.tasks(t0 + Duration::from_millis(1_500), 100);
        assert_eq!(stats.ops, 1);
        assert_eq!(stats.tasks, 100);
        let latency = latency_us(&stats.histogram.borrow());
        assert!((latency.p50 - 250_000.0).abs() < 250.0, "{latency:?}");
    }

    #[test]
    fn a_shared_histogram_is_merged_once() {
        let t0 = Instant::now();
        let window = Window { measure_start: t0, end: t0 + Duration::from_secs(1) };
        let shared = shared_histogram();
        let mut a = ConnStats::sharing(window, shared.clone());
        let mut b = ConnStats::sharing(window, shared);
        let mut c = ConnStats::new(window);
        a.op(t0, t0 + Duration::from_millis(1));
        b.op(t0, t0 + Duration::from_millis(2));
        c.op(t0, t0 + Duration::from_millis(3));
        let (histogram, ops, _, _) = merge(&[a, b, c]);
        assert_eq!(ops, 3);
        assert_eq!(histogram.len(), 3, "each latency once");
    }
}
