//! How long a connection may hold a slot: the request deadline, the idle
//! timeout, and pruning of the longest-idle connections when the server is
//! nearly full (docs/connections.md; the limits are in `crate::limits`).
//!
//! Each connection has a [`ConnTimer`], owned by its reactor, that the
//! connection's tasks keep up to date at a few points:
//!
//! - [`ConnTimer::hold`] / [`ConnTimer::release`] around anything in flight
//!   (a request at a worker, a long poll, a write): a connection with a hold
//!   is *busy* and is never closed by this module (a long poll counts as busy
//!   until its wait ends);
//! - [`ConnTimer::parsed`] after each parse pass: whether it took whole
//!   requests, and whether bytes of an unfinished request remain.
//! - [`ConnTimer::write_begin`] / [`ConnTimer::write_end`] around each write
//!   of replies: a write still pending after the request deadline means the
//!   peer does not read what it asked for, and closes the connection (both
//!   ways, so the write fails), busy or not: otherwise such a client holds
//!   its reply budget, and with a few others the server-wide one, forever.
//!
//! From these it keeps two times: `idle_since_ms` (when the connection last
//! stopped being busy or had a request taken; at accept, the accept) and
//! `request_started_ms` (when the unfinished request's first byte was seen, or
//! when the connection last stopped being busy while one was unfinished: time
//! the server spent busy is not charged to the client). Bytes of an unfinished
//! request do not refresh `idle_since_ms`: a client trickling a byte every few
//! seconds is, for pruning, as idle as one that sends nothing.
//!
//! Each reactor sweeps its own connections every
//! [`Policy::sweep_interval_ms`] and closes those whose [`verdict`] says so.
//! Pruning needs every reactor's connections: a global [`Registry`] holds one
//! [`ConnSlot`] per connection (its descriptor and `idle_since_ms` as an
//! atomic, `BUSY` while it has a hold), and an accept that takes the open
//! count past the threshold closes the longest-idle slots, whichever reactor
//! owns them. A connection with an unfinished request has nothing in flight,
//! so pruning may pick it. At `--max-connections` an accept is admitted in
//! place of a connection already closing (a bounded few past the limit), so a
//! burst faster than pruning does not leave the server full ([`Registry::admit`]).
//!
//! Closing is `shutdown(SHUT_RD)` (`SHUT_RDWR` for a late write), never dropping a future: the connection's
//! pending io_uring read completes with end of stream and the connection ends
//! the usual way (requests already taken are still answered, which is what
//! makes the one race benign: a connection picked by a pruner on another
//! thread just as its owner hands it a request still gets its answer, or for
//! a long poll, ends it unanswered as when its client leaves). A
//! slot's descriptor is shut down only while the slot is registered (the
//! pruner holds the registry lock, the owner's sweep runs on the owner's
//! thread), and a connection unregisters before its socket is closed, so a
//! descriptor number reused by a later connection is never hit.
//!
//! Cost on the hot path: `hold` and `release` touch the slot's atomic only on
//! the transitions between idle and busy, and `release` reads the clock then
//! (a vDSO `clock_gettime`, ~20 ns); `parsed` reads it only when a request was
//! taken by an idle connection or an unfinished one begins.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use slab::Slab;

use super::activity_log::{describe_peer, Example};
use super::os;
use crate::limits::PRUNE_SCAN_INTERVAL_MS;

pub(crate) use crate::core::connections::{
    keep_longest_idle, prune_count, verdict, write_late, Policy, Verdict, NO_REQUEST, STARTED_WHILE_BUSY,
};
/// A slot's `idle_since_ms` while its connection has a hold: never pruned.
const BUSY: u64 = u64::MAX;
/// A time that has not happened: `short_scan_ms` while the last pruning
/// scan found enough idle connections.
const NEVER: u64 = u64::MAX;

/// Monotonic milliseconds since the server started. Tests of this module use
/// a clock they set by hand.
#[derive(Clone, Debug)]
pub(crate) enum Clock {
    Monotonic(Instant),
    #[cfg(test)]
    Manual(Arc<AtomicU64>),
}

impl Clock {
    pub(crate) fn monotonic() -> Clock {
        Clock::Monotonic(Instant::now())
    }

    pub(crate) fn now_ms(&self) -> u64 {
        match self {
            // Below u64::MAX - 1 (the sentinels) for 584 million years.
            Clock::Monotonic(origin) => u64::try_from(origin.elapsed().as_millis()).unwrap_or(STARTED_WHILE_BUSY - 1),
            #[cfg(test)]
            Clock::Manual(now) => now.load(Ordering::Relaxed),
        }
    }
}

/// What other threads may see of a connection: enough to prune it.
pub(crate) struct ConnSlot {
    fd: RawFd,
    /// `metrics::Protocol` as an index: what a close by this module is counted under.
    protocol: usize,
    /// `BUSY` while the connection has a hold; else when it went idle.
    idle_since_ms: AtomicU64,
    /// Set by whoever shut it down (once).
    closing: AtomicBool,
}

/// Every open connection on every reactor, for pruning.
pub(crate) struct Registry {
    pub(crate) policy: Policy,
    pub(crate) clock: Clock,
    inner: Mutex<RegistryInner>,
    /// Connections shut down and not yet unregistered: they still count in
    /// `connections_open` until their reactor sees them end.
    closing_count: AtomicUsize,
    /// When the last pruning scan found too few idle connections (on
    /// `clock`), or `NEVER`: while all are busy, a scan per accept would cost
    /// O(connections) each for nothing.
    short_scan_ms: AtomicU64,
    /// Connections by protocol: accepted, refused, open, and closed here
    /// (pruned, or shed by a deadline or the idle timeout), for `/metrics`
    /// and the activity log, which reports them (docs/logs.md): nothing here
    /// logs a line per connection, so no client can flood the log.
    pub(crate) metrics: crate::metrics::ConnMetrics,
    /// The activity log's examples: the first connection refused, and the
    /// first closed for each reason, since its last line about them.
    pub(crate) refused_example: Example,
    pub(crate) closed_examples: [Example; crate::metrics::CLOSE_REASONS_COUNT],
}

struct RegistryInner {
    slots: Slab<Arc<ConnSlot>>,
    /// Reused by every scan (no allocation per scan once grown).
    candidates: Vec<(u64, usize)>,
}

impl Registry {
    pub(crate) fn new(policy: Policy, clock: Clock) -> Registry {
        Registry {
            policy,
            clock,
            inner: Mutex::new(RegistryInner { slots: Slab::new(), candidates: Vec::new() }),
            closing_count: AtomicUsize::new(0),
            short_scan_ms: AtomicU64::new(NEVER),
            metrics: crate::metrics::ConnMetrics::default(),
            refused_example: Example::default(),
            closed_examples: Default::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RegistryInner> {
        // Nothing under this lock can panic short of a bug; state after one
        // cannot be trusted, so stop loudly rather than reuse it.
        self.inner.lock().expect("the connection registry's lock is poisoned: a thread panicked holding it")
    }

    /// Whether a connection just accepted may stay, `open_before` being
    /// open before it (counted in `connections_open`). Past the threshold it
    /// first prunes (before the new connection is registered, so a new
    /// client is never its own victim). Below `--max-connections` it stays;
    /// at the limit it stays only in place of a connection already closing
    /// (at most a tenth of the limit past it, at least 1 and at most
    /// `limits::CONNECTIONS_CLOSING_ADMITTED_MAX`).
    pub(crate) fn admit(&self, open_before: usize) -> bool {
        self.prune_if_nearly_full(open_before + 1);
        crate::core::connections::admits(&self.policy, open_before, self.closing_count.load(Ordering::Acquire))
    }

    /// With `open_count` connections open (including one just accepted):
    /// past the threshold, closes the longest-idle connections on any
    /// reactor. Returns how many it closed.
    fn prune_if_nearly_full(&self, open_count: usize) -> usize {
        if prune_count(&self.policy, open_count, self.closing_count.load(Ordering::Acquire)) == 0 {
            return 0;
        }
        let now_ms = self.clock.now_ms();
        let short_ms = self.short_scan_ms.load(Ordering::Acquire);
        if short_ms != NEVER && now_ms < short_ms.saturating_add(PRUNE_SCAN_INTERVAL_MS) {
            return 0; // moments ago a scan found too few idle: not one per accept
        }
        // A scan that finds enough brings the count 1 % below the threshold,
        // so the next is due only that many accepts later: scans are
        // amortized without a rate limit while there is something to prune.
        let mut inner = self.lock();
        // Under the lock (scans from two reactors take turns), with the
        // closing count that the previous scan left.
        let count = prune_count(&self.policy, open_count, self.closing_count.load(Ordering::Acquire));
        if count == 0 {
            return 0;
        }
        let RegistryInner { slots, candidates } = &mut *inner;
        candidates.clear();
        candidates.extend(slots.iter().filter_map(|(key, slot)| {
            let idle_since_ms = slot.idle_since_ms.load(Ordering::Acquire);
            (idle_since_ms != BUSY && !slot.closing.load(Ordering::Acquire)).then_some((idle_since_ms, key))
        }));
        keep_longest_idle(candidates, count);
        let mut closed = 0;
        for &(idle_since_ms, key) in candidates.iter() {
            // Registered (we hold the lock), so its descriptor is still its own.
            if self.close(&slots[key], false) {
                closed += 1;
                let idle_ms = now_ms.saturating_sub(idle_since_ms);
                self.closed(&slots[key], crate::metrics::CLOSE_PRUNED, Some(idle_ms));
            }
        }
        if closed < count {
            self.short_scan_ms.store(now_ms, Ordering::Release);
            tracing::debug!(wanted = count, closed, open_count, "too few idle connections to prune; the rest are busy");
        } else {
            self.short_scan_ms.store(NEVER, Ordering::Release);
        }
        closed
    }

    /// Counts a connection this module closed (`reason`: a
    /// `metrics::CLOSE_REASON_NAMES` index) and offers it as the activity
    /// log's example. The slot is registered (its descriptor is its own).
    fn closed(&self, slot: &ConnSlot, reason: usize, idle_ms: Option<u64>) {
        self.closed_examples[reason].offer(|| {
            let peer = describe_peer(slot.protocol, os::peer_address(slot.fd));
            match idle_ms {
                Some(idle_ms) => format!("{peer} idle {idle_ms} ms"),
                None => peer,
            }
        });
        self.metrics.closed_by_server(slot.protocol, reason);
    }

    /// Shuts a connection down for reading, once: its pending read completes
    /// with end of stream and it ends. `both_ways` shuts writing down too, so
    /// a write stuck on a peer that does not read fails. The caller guarantees
    /// the slot is registered (so `fd` is still this connection's).
    fn close(&self, slot: &ConnSlot, both_ways: bool) -> bool {
        if slot.closing.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.closing_count.fetch_add(1, Ordering::AcqRel);
        if both_ways {
            os::shutdown_both(slot.fd);
        } else {
            os::shutdown_read(slot.fd);
        }
        true
    }

    fn insert(&self, slot: Arc<ConnSlot>) -> usize {
        self.lock().slots.insert(slot)
    }

    fn remove(&self, key: usize, slot: &ConnSlot) {
        let mut inner = self.lock();
        let removed = inner.slots.try_remove(key);
        assert!(removed.is_some(), "a connection unregistered twice");
        if slot.closing.load(Ordering::Acquire) {
            self.closing_count.fetch_sub(1, Ordering::AcqRel);
        }
    }

    #[cfg(test)]
    fn closing_count(&self) -> usize {
        self.closing_count.load(Ordering::Acquire)
    }
}

/// One connection's timing state, on its reactor's thread.
pub(crate) struct ConnTimer {
    holds: Cell<u32>,
    /// When the write of replies now pending began (`NO_REQUEST`: none).
    write_started_ms: Cell<u64>,
    request_started_ms: Cell<u64>,
    idle_since_ms: Cell<u64>,
    local_key: Cell<usize>,
    global_key: usize,
    slot: Arc<ConnSlot>,
    clock: Clock,
}

impl ConnTimer {
    /// Something is now in flight for this connection (a request handed to a
    /// worker, a long poll, a write): it is busy until the matching `release`.
    pub(crate) fn hold(&self) {
        let holds = self.holds.get();
        if holds == 0 {
            self.slot.idle_since_ms.store(BUSY, Ordering::Release);
        }
        self.holds.set(holds + 1);
    }

    /// The end of what a `hold` began. The last one makes the connection idle
    /// from now, and restarts the deadline of an unfinished request.
    pub(crate) fn release(&self) {
        let holds = self.holds.get();
        assert!(holds > 0, "a connection released more than it held");
        self.holds.set(holds - 1);
        if holds == 1 {
            let now_ms = self.clock.now_ms();
            self.idle_since_ms.set(now_ms);
            self.slot.idle_since_ms.store(now_ms, Ordering::Release);
            if self.request_started_ms.get() != NO_REQUEST {
                self.request_started_ms.set(now_ms);
            }
        }
    }

    /// Holds the timer while `busy` and releases it once not, `held`
    /// remembering which (for a state that is recomputed, not counted).
    pub(crate) fn hold_while(&self, held: &mut bool, busy: bool) {
        if busy && !*held {
            self.hold();
        } else if !busy && *held {
            self.release();
        }
        *held = busy;
    }

    /// After a parse pass: `took_any`, whether it took whole requests (or
    /// frames); `unfinished`, whether bytes of an unfinished one remain.
    pub(crate) fn parsed(&self, took_any: bool, unfinished: bool) {
        let started = self.request_started_ms.get() != NO_REQUEST;
        if !took_any && unfinished == started {
            return; // nothing changed (the common case of a trickle: no clock read)
        }
        let busy = self.holds.get() > 0;
        let now_ms = if busy { STARTED_WHILE_BUSY } else { self.clock.now_ms() };
        if took_any && !busy {
            self.idle_since_ms.set(now_ms);
            self.slot.idle_since_ms.store(now_ms, Ordering::Release);
        }
        if !unfinished {
            self.request_started_ms.set(NO_REQUEST);
        } else if took_any || !started {
            // A new request began (the rest of this read, or a first byte).
            self.request_started_ms.set(now_ms);
        }
    }

    /// A write of replies to the peer begins (one `write_all` of a batch);
    /// it must end within the request deadline (`write_late`).
    pub(crate) fn write_begin(&self) {
        self.write_started_ms.set(self.clock.now_ms());
    }

    /// The write begun by `write_begin` ended (done or failed).
    pub(crate) fn write_end(&self) {
        self.write_started_ms.set(NO_REQUEST);
    }

    fn verdict(&self, policy: &Policy, now_ms: u64) -> Verdict {
        if write_late(policy, now_ms, self.write_started_ms.get()) {
            return Verdict::WriteDeadline;
        }
        verdict(policy, now_ms, self.holds.get(), self.request_started_ms.get(), self.idle_since_ms.get())
    }
}

/// A reactor's connections, swept for missed deadlines and idle ones.
#[derive(Default)]
pub(crate) struct ReactorConns {
    conns: RefCell<Slab<Rc<ConnTimer>>>,
}

impl ReactorConns {
    /// A connection just accepted (idle from now), with its descriptor and
    /// its protocol (`metrics::Protocol as usize`).
    pub(crate) fn register(&self, registry: &Registry, fd: RawFd, protocol: usize) -> Rc<ConnTimer> {
        let now_ms = registry.clock.now_ms();
        let slot =
            Arc::new(ConnSlot { fd, protocol, idle_since_ms: AtomicU64::new(now_ms), closing: AtomicBool::new(false) });
        let global_key = registry.insert(slot.clone());
        let timer = Rc::new(ConnTimer {
            holds: Cell::new(0),
            write_started_ms: Cell::new(NO_REQUEST),
            request_started_ms: Cell::new(NO_REQUEST),
            idle_since_ms: Cell::new(now_ms),
            local_key: Cell::new(usize::MAX),
            global_key,
            slot,
            clock: registry.clock.clone(),
        });
        timer.local_key.set(self.conns.borrow_mut().insert(timer.clone()));
        timer
    }

    /// The connection has ended; called before its socket is closed.
    pub(crate) fn unregister(&self, registry: &Registry, timer: &ConnTimer) {
        let removed = self.conns.borrow_mut().try_remove(timer.local_key.get());
        assert!(removed.is_some(), "a connection unregistered twice from its reactor");
        registry.remove(timer.global_key, &timer.slot);
    }

    /// Closes every connection of this reactor whose deadline or idle
    /// timeout has passed. Returns how many it closed.
    pub(crate) fn sweep(&self, registry: &Registry) -> usize {
        let now_ms = registry.clock.now_ms();
        let mut closed = 0;
        for (_, timer) in self.conns.borrow().iter() {
            let verdict = timer.verdict(&registry.policy, now_ms);
            // Registered, on its owner's thread: the descriptor is its own.
            let both_ways = verdict == Verdict::WriteDeadline;
            if verdict != Verdict::Keep && registry.close(&timer.slot, both_ways) {
                closed += 1;
                let reason = match verdict {
                    Verdict::RequestDeadline => 1,
                    Verdict::WriteDeadline => 2,
                    Verdict::IdleTimeout | Verdict::Keep => 3,
                };
                registry.closed(&timer.slot, reason, None);
            }
        }
        closed
    }
}

/// A reactor's sweeping task: runs until the server stops (and not at all
/// when both timeouts are off).
pub(crate) async fn sweep_loop(conns: Rc<ReactorConns>, shared: Arc<super::Shared>) {
    let Some(interval_ms) = shared.conns.policy.sweep_interval_ms() else { return };
    while !shared.stopping.load(Ordering::SeqCst) {
        // A timer, not an io_uring operation: dropping it is harmless.
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        conns.sweep(&shared.conns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::CONNECTION_SWEEP_INTERVAL_MS_MIN;

    fn policy(request_deadline_ms: u64, idle_timeout_ms: u64, connections_max: usize) -> Policy {
        Policy { request_deadline_ms, idle_timeout_ms, prune_above_percent: 90, connections_max }
    }

    fn manual() -> (Clock, Arc<AtomicU64>) {
        let now = Arc::new(AtomicU64::new(1_000));
        (Clock::Manual(now.clone()), now)
    }

    #[test]
    fn verdict_applies_the_deadline_to_unfinished_requests_and_the_idle_timeout_to_the_rest() {
        let p = policy(10_000, 300_000, 100);
        // Busy (a long poll, a request at a worker) is never closed.
        assert_eq!(verdict(&p, 10_000_000, 1, 0, 0), Verdict::Keep);
        // An unfinished request: the deadline, from its start.
        assert_eq!(verdict(&p, 10_999, 0, 1_000, 0), Verdict::Keep);
        assert_eq!(verdict(&p, 11_000, 0, 1_000, 0), Verdict::RequestDeadline);
        // ... and never the idle timeout, however long ago it was last idle.
        assert_eq!(verdict(&p, 5_000, 0, 1_000, 0), Verdict::Keep);
        // Idle: the idle timeout, from when it went idle.
        assert_eq!(verdict(&p, 300_999, 0, NO_REQUEST, 1_000), Verdict::Keep);
        assert_eq!(verdict(&p, 301_000, 0, NO_REQUEST, 1_000), Verdict::IdleTimeout);
        // 0 turns either off.
        assert_eq!(verdict(&policy(10_000, 0, 100), u64::MAX - 2, 0, NO_REQUEST, 0), Verdict::Keep);
        assert_eq!(verdict(&policy(0, 300_000, 100), u64::MAX - 2, 0, 0, 0), Verdict::Keep);
    }

    #[test]
    fn pruning_starts_past_90_percent_and_goes_1_percent_below() {
        let p = policy(0, 0, 2_000);
        assert_eq!(p.prune_above_count(), 1_800);
        assert_eq!(prune_count(&p, 1_800, 0), 0);
        assert_eq!(prune_count(&p, 1_801, 0), 21); // down to 1,780
        assert_eq!(prune_count(&p, 1_801, 1), 0); // one already closing
        let small = policy(0, 0, 20);
        assert_eq!((prune_count(&small, 18, 0), prune_count(&small, 19, 0)), (0, 2));
        let never = Policy { prune_above_percent: 100, ..p };
        assert_eq!(prune_count(&never, 2_000, 0), 0);
    }

    #[test]
    fn a_write_pending_past_the_request_deadline_is_late_even_while_busy() {
        let p = policy(10_000, 300_000, 100);
        assert!(!write_late(&p, 1_000_000, NO_REQUEST), "no write pending");
        assert!(!write_late(&p, 10_999, 1_000));
        assert!(write_late(&p, 11_000, 1_000));
        assert!(!write_late(&policy(0, 300_000, 100), u64::MAX - 2, 0), "0 turns the deadline off");
    }

    #[test]
    fn sweep_interval_is_a_quarter_of_the_shorter_timeout_within_bounds() {
        assert_eq!(policy(10_000, 300_000, 1).sweep_interval_ms(), Some(1_000));
        assert_eq!(policy(1_000, 0, 1).sweep_interval_ms(), Some(250));
        assert_eq!(policy(0, 2_000, 1).sweep_interval_ms(), Some(500));
        assert_eq!(policy(1, 0, 1).sweep_interval_ms(), Some(CONNECTION_SWEEP_INTERVAL_MS_MIN));
        assert_eq!(policy(0, 0, 1).sweep_interval_ms(), None);
    }

    #[test]
    fn keep_longest_idle_keeps_the_smallest_idle_since() {
        let mut candidates = vec![(50, 0), (10, 1), (40, 2), (20, 3), (30, 4)];
        keep_longest_idle(&mut candidates, 2);
        candidates.sort_unstable();
        assert_eq!(candidates, vec![(10, 1), (20, 3)]);
        let mut all = vec![(5, 0)];
        keep_longest_idle(&mut all, 3);
        assert_eq!(all, vec![(5, 0)]);
        keep_longest_idle(&mut all, 0);
        assert!(all.is_empty());
    }

    #[test]
    fn a_trickled_request_keeps_its_start_and_time_busy_is_not_charged() {
        let (clock, now) = manual();
        let registry = Registry::new(policy(1_000, 5_000, 100), clock);
        let conns = ReactorConns::default();
        // Descriptor -1: shutdown fails with EBADF, nothing else happens.
        let timer = conns.register(&registry, -1, 0);
        // First bytes of a request at 1,000; more bytes at 1,500 change nothing.
        timer.parsed(false, true);
        now.store(1_500, Ordering::Relaxed);
        timer.parsed(false, true);
        now.store(1_999, Ordering::Relaxed);
        assert_eq!(timer.verdict(&registry.policy, 1_999), Verdict::Keep);
        assert_eq!(timer.verdict(&registry.policy, 2_000), Verdict::RequestDeadline);
        // It completes, with the next request's first bytes behind it, and
        // goes to a worker for 10 s: busy, never closed.
        timer.hold();
        timer.parsed(true, true);
        now.store(12_000, Ordering::Relaxed);
        assert_eq!(timer.verdict(&registry.policy, 12_000), Verdict::Keep);
        assert_eq!(registry.lock().slots[timer.global_key].idle_since_ms.load(Ordering::Relaxed), BUSY);
        // Answered: the unfinished request's deadline runs from now.
        timer.release();
        assert_eq!(timer.verdict(&registry.policy, 12_999), Verdict::Keep);
        assert_eq!(timer.verdict(&registry.policy, 13_000), Verdict::RequestDeadline);
        // It completes too, nothing is left: idle from then.
        now.store(12_500, Ordering::Relaxed);
        timer.parsed(true, false);
        assert_eq!(timer.verdict(&registry.policy, 17_499), Verdict::Keep);
        assert_eq!(timer.verdict(&registry.policy, 17_500), Verdict::IdleTimeout);
        conns.unregister(&registry, &timer);
    }

    #[test]
    fn the_sweep_closes_once_and_pruning_picks_the_longest_idle_never_the_busy() {
        let (clock, now) = manual();
        let registry = Registry::new(policy(0, 0, 10), clock); // prune above 9, down to 8
        let conns = ReactorConns::default();
        let mut timers = Vec::new();
        for i in 0..9u64 {
            now.store(1_000 + i, Ordering::Relaxed);
            timers.push(conns.register(&registry, -1, 0));
        }
        // The oldest is in a long poll; the second oldest trickles a request.
        timers[0].hold();
        timers[1].parsed(false, true);
        assert_eq!(registry.prune_if_nearly_full(9), 0);
        // The 10th connection: prune to 8, the two longest idle that are not busy.
        now.store(2_000, Ordering::Relaxed);
        assert_eq!(registry.prune_if_nearly_full(10), 2);
        let closing: Vec<bool> = timers.iter().map(|t| t.slot.closing.load(Ordering::Relaxed)).collect();
        assert_eq!(closing, [false, true, true, false, false, false, false, false, false]);
        assert_eq!(registry.closing_count(), 2);
        // Until they end, they count as closing: nothing more to prune.
        assert_eq!(registry.prune_if_nearly_full(10), 0);
        // Once they have ended, their count goes.
        for timer in timers.drain(1..3) {
            conns.unregister(&registry, &timer);
        }
        assert_eq!(registry.closing_count(), 0);
        // The sweep with timeouts off closes nothing.
        assert_eq!(conns.sweep(&registry), 0);
        for timer in timers {
            conns.unregister(&registry, &timer);
        }
    }

    #[test]
    fn at_the_limit_a_new_connection_is_admitted_only_in_place_of_one_closing() {
        let (clock, now) = manual();
        // Prune above 90, down to 89; at most 10 admitted past the limit.
        let registry = Registry::new(policy(0, 0, 100), clock);
        let conns = ReactorConns::default();
        let timers: Vec<_> = (0..100).map(|_| conns.register(&registry, -1, 0)).collect();
        // All busy: nothing to prune, the 101st is refused.
        for timer in &timers {
            timer.hold();
        }
        assert!(!registry.admit(100));
        // Two idle: pruning closes them, and the 101st takes the place of
        // one of them before they have ended.
        timers[3].release();
        timers[7].release();
        // The scan that came up short is not repeated within the interval.
        assert!(!registry.admit(100));
        now.fetch_add(PRUNE_SCAN_INTERVAL_MS, Ordering::Relaxed);
        assert!(registry.admit(100));
        assert_eq!(registry.closing_count(), 2);
        assert!(registry.admit(101), "the second one closing makes room for a 102nd");
        assert!(!registry.admit(102), "no more admitted past the limit than are closing");
        for timer in &timers {
            conns.unregister(&registry, timer);
        }
        // A small limit admits at most a tenth of it past it (at least 1).
        let small = Registry::new(policy(0, 0, 10), Clock::Manual(now.clone()));
        let timers: Vec<_> = (0..10).map(|_| conns.register(&small, -1, 0)).collect();
        assert!(small.admit(10), "pruning closed three (down to 8 with the new one)");
        assert_eq!(small.closing_count(), 3);
        assert!(!small.admit(11), "but only one is admitted past 10");
        for timer in &timers {
            conns.unregister(&small, timer);
        }
    }

    /// The TLS handshake is timed as a request (tls.rs): from its first
    /// byte, the request deadline; done, the deadline is over and the idle
    /// timeout applies. A connection that sends nothing is idle.
    #[test]
    fn a_tls_handshake_is_timed_by_the_request_deadline_from_its_first_byte() {
        use super::super::tls::{charge_deadline, handshake_done};
        let (clock, now) = manual();
        let registry = Registry::new(policy(1_000, 5_000, 100), clock);
        let conns = ReactorConns::default();
        let timer = conns.register(&registry, -1, 0);
        let charged = Cell::new(false);
        // Silent since the accept at 1,000: only the idle timeout.
        assert_eq!(timer.verdict(&registry.policy, 2_500), Verdict::Keep);
        // The ClientHello's first bytes at 3,000; more at 3,900 do not extend it.
        now.store(3_000, Ordering::Relaxed);
        charge_deadline(&timer, &charged, true, true);
        now.store(3_900, Ordering::Relaxed);
        charge_deadline(&timer, &charged, true, false);
        assert_eq!(timer.verdict(&registry.policy, 3_999), Verdict::Keep);
        assert_eq!(timer.verdict(&registry.policy, 4_000), Verdict::RequestDeadline);
        // Done before then: idle from the accept, as before.
        handshake_done(&timer, &charged);
        assert_eq!(timer.verdict(&registry.policy, 5_999), Verdict::Keep);
        assert_eq!(timer.verdict(&registry.policy, 6_000), Verdict::IdleTimeout);
        // After the handshake, a read that stops inside a record starts it.
        now.store(5_000, Ordering::Relaxed);
        charge_deadline(&timer, &charged, false, true);
        assert_eq!(timer.verdict(&registry.policy, 6_000), Verdict::RequestDeadline);
        conns.unregister(&registry, &timer);
    }

    #[test]
    fn the_sweep_closes_idle_connections_once() {
        let (clock, now) = manual();
        let registry = Registry::new(policy(0, 1_000, 100), clock);
        let conns = ReactorConns::default();
        let idle = conns.register(&registry, -1, 0);
        let busy = conns.register(&registry, -1, 0);
        busy.hold();
        now.store(1_999, Ordering::Relaxed);
        assert_eq!(conns.sweep(&registry), 0);
        now.store(2_000, Ordering::Relaxed);
        assert_eq!(conns.sweep(&registry), 1);
        assert_eq!(conns.sweep(&registry), 0, "already closing");
        assert!(idle.slot.closing.load(Ordering::Relaxed) && !busy.slot.closing.load(Ordering::Relaxed));
        busy.release();
        conns.unregister(&registry, &idle);
        conns.unregister(&registry, &busy);
    }
}
