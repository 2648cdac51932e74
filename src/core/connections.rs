//! Connection admission, deadlines and pruning, as pure decisions over a
//! connection's times (docs/connections.md; the limits are in
//! `crate::limits`). The reactors apply them to real connections
//! (`server/conn_timers.rs`, which keeps the times and closes sockets); the
//! simulator (`crate::sim`) applies them to simulated ones.

use crate::limits::{
    CONNECTIONS_CLOSING_ADMITTED_MAX, CONNECTION_SWEEP_INTERVAL_MS_MAX, CONNECTION_SWEEP_INTERVAL_MS_MIN,
    PRUNE_BATCH_PERMILLE,
};

/// `request_started_ms` when no request is unfinished.
pub const NO_REQUEST: u64 = u64::MAX;
/// `request_started_ms` of a request that began while the connection was
/// busy: the connection stamps it when it goes idle.
pub const STARTED_WHILE_BUSY: u64 = u64::MAX - 1;

/// The connection-lifetime settings (`--request-deadline-ms`,
/// `--idle-timeout-ms`, `--prune-above-percent`, `--max-connections`).
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// 0: off.
    pub request_deadline_ms: u64,
    /// 0: off.
    pub idle_timeout_ms: u64,
    /// 100: never prune.
    pub prune_above_percent: u8,
    pub connections_max: usize,
}

impl Policy {
    /// Open connections (not already being closed) above this make an
    /// accept prune.
    pub fn prune_above_count(&self) -> usize {
        if self.prune_above_percent >= 100 {
            return usize::MAX;
        }
        self.connections_max.saturating_mul(usize::from(self.prune_above_percent)) / 100
    }

    /// What a pruning pass brings the open count down to: 1 % of the limit
    /// below the threshold, so one scan serves many accepts.
    pub fn prune_target_count(&self) -> usize {
        let batch = (self.connections_max.saturating_mul(PRUNE_BATCH_PERMILLE) / 1000).max(1);
        self.prune_above_count().saturating_sub(batch)
    }

    /// How often a reactor sweeps its connections: a quarter of the shorter
    /// timeout, so one is enforced at most a quarter late; `None` when both
    /// are off.
    pub fn sweep_interval_ms(&self) -> Option<u64> {
        let shortest = [self.request_deadline_ms, self.idle_timeout_ms].into_iter().filter(|&ms| ms > 0).min()?;
        Some((shortest / 4).clamp(CONNECTION_SWEEP_INTERVAL_MS_MIN, CONNECTION_SWEEP_INTERVAL_MS_MAX))
    }
}

/// What the sweep does with a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// An unfinished request outlived `--request-deadline-ms`.
    RequestDeadline,
    /// No request and nothing in flight for `--idle-timeout-ms`.
    IdleTimeout,
    /// A write of replies waited `--request-deadline-ms` for the peer to read
    /// (a client that asks and never reads holds its reply budget, and with
    /// enough of them the server-wide one, until this closes it).
    WriteDeadline,
}

/// The sweep's decision for one connection, from its state at `now_ms`.
/// Pure, so the policy is tested without sockets or sleeps.
pub fn verdict(policy: &Policy, now_ms: u64, holds: u32, request_started_ms: u64, idle_since_ms: u64) -> Verdict {
    if holds > 0 {
        return Verdict::Keep; // busy: a long poll, a request being executed, a write
    }
    if request_started_ms != NO_REQUEST {
        // A request is unfinished: the deadline applies, the idle timeout does not.
        let late = policy.request_deadline_ms > 0
            && request_started_ms != STARTED_WHILE_BUSY
            && now_ms.saturating_sub(request_started_ms) >= policy.request_deadline_ms;
        return if late { Verdict::RequestDeadline } else { Verdict::Keep };
    }
    let idle = policy.idle_timeout_ms > 0 && now_ms.saturating_sub(idle_since_ms) >= policy.idle_timeout_ms;
    if idle {
        Verdict::IdleTimeout
    } else {
        Verdict::Keep
    }
}

/// Whether a write of replies that began at `write_started_ms` (`NO_REQUEST`:
/// none pending) has waited out the request deadline. It applies while the
/// connection is busy too: a write pending that long is the peer's doing
/// (it does not read), unlike a request being executed or a long poll.
pub fn write_late(policy: &Policy, now_ms: u64, write_started_ms: u64) -> bool {
    policy.request_deadline_ms > 0
        && write_started_ms != NO_REQUEST
        && now_ms.saturating_sub(write_started_ms) >= policy.request_deadline_ms
}

/// How many connections a pruning pass closes, with `open_count` open of
/// which `closing_count` are already being closed.
pub fn prune_count(policy: &Policy, open_count: usize, closing_count: usize) -> usize {
    let live = open_count.saturating_sub(closing_count);
    if live <= policy.prune_above_count() {
        return 0;
    }
    live - policy.prune_target_count()
}

/// Leaves in `candidates` (`(idle_since_ms, key)`) the `count` longest idle
/// (smallest `idle_since_ms`), in no particular order: O(n).
pub fn keep_longest_idle(candidates: &mut Vec<(u64, usize)>, count: usize) {
    if count == 0 {
        candidates.clear();
    } else if count < candidates.len() {
        candidates.select_nth_unstable(count - 1);
        candidates.truncate(count);
    }
}

/// Whether a connection just accepted may stay, `open_before` being open
/// before it (after any pruning its accept did) and `closing_count` of them
/// already being closed. Below `--max-connections` it stays; at the limit it
/// stays only in place of a connection already closing (at most a tenth of
/// the limit past it, at least 1 and at most [`CONNECTIONS_CLOSING_ADMITTED_MAX`]),
/// so a burst faster than pruning does not leave the server full.
pub fn admits(policy: &Policy, open_before: usize, closing_count: usize) -> bool {
    let max = policy.connections_max;
    let closing_admitted_max = (max / 10).clamp(1, CONNECTIONS_CLOSING_ADMITTED_MAX);
    open_before < max + closing_count.min(closing_admitted_max)
}
