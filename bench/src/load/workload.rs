//! What each scenario does on a connection (`driver::Workload`): producers,
//! consumers, status readers, deps producers, and the preloader.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use tokio::sync::Notify;

use super::codec::{Handle, Reply, Req};
use super::driver::{Pending, Workload};
use super::stats::ConnStats;
use super::DEPS_CHILDREN;
use crate::Rng;

/// Enqueues, one task or one batch per request.
pub(crate) struct Producer {
    /// Tasks per request: 1 for `Req::Enqueue`, else `Req::EnqueueBatch`'s size.
    pub batch: Option<usize>,
    /// Whether its enqueues are the run's ops. Not in the full cycle, whose op
    /// is a completed task: its producers only feed the consumers (before
    /// issue 17 they were counted too, so a cycle's ops/s was enqueues plus
    /// completions and its latencies mixed both).
    pub counted: bool,
}

impl Workload for Producer {
    fn next(&mut self, now: Instant) -> Option<(Req, Instant)> {
        Some((if self.batch.is_some() { Req::EnqueueBatch } else { Req::Enqueue }, now))
    }

    fn on_reply(&mut self, pending: Pending, reply: Reply, now: Instant, stats: &mut ConnStats) {
        match reply {
            Reply::Enqueued { .. } | Reply::EnqueuedBatch { .. } => {
                if self.counted {
                    stats.op(pending.op_start, now);
                    stats.tasks(now, self.batch.unwrap_or(1) as u64);
                }
            }
            other => unexpected(&pending.req, other, now, stats),
        }
    }
}

/// Takes tasks and completes them: one dequeue, then (except for Redis `RPOP`,
/// which needs none) one complete. An empty dequeue is sent again at once.
/// An op is a completed task, timed from its dequeue's send to its complete's
/// reply; in the deps scenario an op is a completed DAG, timed by [`DepsShared`].
///
/// On the open loop (`open`), dequeues start on the schedule and the rest of
/// the op — the complete, and a dequeue sent again after an empty answer —
/// follows at once ([`Workload::follow_up`]), timed from the scheduled start:
/// an op that waits for a task counts that wait.
pub(crate) struct Consumer {
    completes: VecDeque<(Req, Instant)>,
    deps: Option<Rc<DepsShared>>,
    open: bool,
    /// Open loop: ops whose dequeue came back empty, by scheduled start.
    retries: VecDeque<Instant>,
}

impl Consumer {
    pub(crate) fn new(deps: Option<Rc<DepsShared>>, open: bool) -> Consumer {
        Consumer { completes: VecDeque::new(), deps, open, retries: VecDeque::new() }
    }

    fn completed(&mut self, op_start: Instant, join: Option<u64>, now: Instant, stats: &mut ConnStats) {
        stats.tasks(now, 1);
        match &self.deps {
            None => stats.op(op_start, now),
            Some(deps) => {
                if let Some(started) = join.and_then(|marker| deps.finish(marker)) {
                    stats.op(started, now);
                }
            }
        }
    }
}

impl Workload for Consumer {
    fn next(&mut self, now: Instant) -> Option<(Req, Instant)> {
        Some(self.completes.pop_front().unwrap_or((Req::Dequeue, now)))
    }

    fn follow_up(&mut self) -> Option<(Req, Instant)> {
        if let Some(complete) = self.completes.pop_front() {
            return Some(complete);
        }
        self.retries.pop_front().map(|op_start| (Req::Dequeue, op_start))
    }

    fn on_reply(&mut self, pending: Pending, reply: Reply, now: Instant, stats: &mut ConnStats) {
        match (&pending.req, reply) {
            (Req::Dequeue, Reply::Empty) => {
                if self.open {
                    self.retries.push_back(pending.op_start);
                }
            }
            (Req::Dequeue, Reply::Leased { handle: Handle::None, join_slot }) => {
                self.completed(pending.op_start, join_slot, now, stats);
            }
            (Req::Dequeue, Reply::Leased { handle, join_slot }) => {
                self.completes.push_back((Req::Complete { handle, join_slot }, pending.op_start));
            }
            (Req::Complete { join_slot, .. }, Reply::Done) => {
                self.completed(pending.op_start, *join_slot, now, stats);
            }
            (req, other) => {
                // A join that cannot be completed ends its DAG, so that its
                // producer does not wait for it forever.
                if let (Req::Complete { join_slot: Some(marker), .. }, Some(deps)) = (req, &self.deps) {
                    deps.finish(*marker);
                }
                unexpected(req, other, now, stats);
            }
        }
    }
}

/// Looks tasks up by id, chosen at random among the preloaded ones.
pub(crate) struct StatusReader {
    pub ids: Rc<Vec<u64>>,
    pub rng: Rng,
}

impl Workload for StatusReader {
    fn next(&mut self, now: Instant) -> Option<(Req, Instant)> {
        let id = self.ids[(self.rng.next_u64() % self.ids.len() as u64) as usize];
        Some((Req::Status { id }, now))
    }

    fn on_reply(&mut self, pending: Pending, reply: Reply, now: Instant, stats: &mut ConnStats) {
        match reply {
            Reply::Done => {
                stats.op(pending.op_start, now);
                stats.tasks(now, 1);
            }
            other => unexpected(&pending.req, other, now, stats),
        }
    }
}

/// The deps scenario's DAGs in flight, shared by its producers and consumers
/// (all on one thread).
///
/// A DAG is a parent, [`DEPS_CHILDREN`] children depending on it (one batch),
/// and a join depending on every child. Each producer connection owns
/// `--pipeline` slots and starts a DAG in a free slot; the join's payload
/// carries the slot's marker; the consumer that completes the join frees the
/// slot, records the DAG's latency from the parent's send, and wakes the
/// producers. DAGs in flight are thus bounded (closed loop), so the latency
/// measures the dependency machinery, not a backlog growing for the whole run.
pub(crate) struct DepsShared {
    /// Distinguishes this run's joins from leftovers of an earlier run on the
    /// same queue (high 32 bits of a marker; the slot is the low 32).
    run: u64,
    /// When each slot's DAG started; `None`: the slot is free.
    started: RefCell<Vec<Option<Instant>>>,
    pub notify: Notify,
}

impl DepsShared {
    pub(crate) fn new(slots: usize, run: u32) -> DepsShared {
        DepsShared { run: u64::from(run) << 32, started: RefCell::new(vec![None; slots]), notify: Notify::new() }
    }

    fn marker(&self, slot: usize) -> u64 {
        self.run | slot as u64
    }

    /// Takes a free slot among `slots` for a DAG starting at `now`.
    fn start(&self, slots: std::ops::Range<usize>, now: Instant) -> Option<u64> {
        let mut started = self.started.borrow_mut();
        let slot = slots.into_iter().find(|&s| started[s].is_none())?;
        started[slot] = Some(now);
        Some(self.marker(slot))
    }

    /// Ends the DAG of `marker` (if it is one of this run's, in flight): frees
    /// its slot, wakes the producers, returns when it started.
    fn finish(&self, marker: u64) -> Option<Instant> {
        if marker & !u64::from(u32::MAX) != self.run {
            return None;
        }
        let slot = (marker & u64::from(u32::MAX)) as usize;
        let started = self.started.borrow_mut().get_mut(slot)?.take();
        if started.is_some() {
            self.notify.notify_waiters();
        }
        started
    }
}

/// Starts DAGs ([`DepsShared`]) in its slots: parent, then children, then join,
/// each request sent when the previous one's reply brings the ids it needs.
pub(crate) struct DepsProducer {
    pub deps: Rc<DepsShared>,
    pub slots: std::ops::Range<usize>,
    follow: VecDeque<(Req, Instant)>,
}

impl DepsProducer {
    pub(crate) fn new(deps: Rc<DepsShared>, slots: std::ops::Range<usize>) -> DepsProducer {
        DepsProducer { deps, slots, follow: VecDeque::new() }
    }
}

impl Workload for DepsProducer {
    fn next(&mut self, now: Instant) -> Option<(Req, Instant)> {
        if let Some(next) = self.follow.pop_front() {
            return Some(next);
        }
        let marker = self.deps.start(self.slots.clone(), now)?;
        Some((Req::DepParent { slot: marker }, now))
    }

    fn on_reply(&mut self, pending: Pending, reply: Reply, now: Instant, stats: &mut ConnStats) {
        let op_start = pending.op_start;
        match (pending.req, reply) {
            (Req::DepParent { slot }, Reply::Enqueued { id: Some(parent) }) => {
                self.follow.push_back((Req::DepChildren { parent, slot }, op_start));
            }
            (Req::DepChildren { slot, .. }, Reply::EnqueuedBatch { ids }) if ids.len() == DEPS_CHILDREN => {
                self.follow.push_back((Req::DepJoin { slot, children: ids }, op_start));
            }
            (Req::DepJoin { .. }, Reply::Enqueued { .. }) => {}
            (req, other) => {
                if let Req::DepParent { slot } | Req::DepChildren { slot, .. } | Req::DepJoin { slot, .. } = &req {
                    self.deps.finish(*slot);
                }
                unexpected(&req, other, now, stats);
            }
        }
    }
}

/// How a preload enqueues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PreloadMode {
    /// Batches (TaskQueueX `enqueue_batch`, Redis multi-value `LPUSH`).
    Batch { chunk: usize },
    /// One task per request (beanstalkd `put`).
    Single,
    /// Redis status hashes (`HSET queue:task:N`), ids 1 to N.
    RedisHash,
}

/// Enqueues `remaining` tasks as fast as the connection allows, collecting their
/// ids (when the system gives ids).
pub(crate) struct Preloader {
    pub remaining: usize,
    pub mode: PreloadMode,
    pub ids: Vec<u64>,
    pub tasks: usize,
    next_hash_id: u64,
}

impl Preloader {
    pub(crate) fn new(tasks: usize, mode: PreloadMode) -> Preloader {
        Preloader { remaining: tasks, mode, ids: Vec::with_capacity(tasks), tasks: 0, next_hash_id: 1 }
    }
}

impl Workload for Preloader {
    fn next(&mut self, now: Instant) -> Option<(Req, Instant)> {
        if self.remaining == 0 {
            return None;
        }
        let req = match self.mode {
            PreloadMode::Batch { chunk } => {
                let count = chunk.min(self.remaining);
                self.remaining -= count;
                Req::PreloadBatch { count }
            }
            PreloadMode::Single => {
                self.remaining -= 1;
                Req::Enqueue
            }
            PreloadMode::RedisHash => {
                self.remaining -= 1;
                let id = self.next_hash_id;
                self.next_hash_id += 1;
                Req::PreloadStatus { id }
            }
        };
        Some((req, now))
    }

    fn on_reply(&mut self, pending: Pending, reply: Reply, now: Instant, stats: &mut ConnStats) {
        match (&pending.req, reply) {
            (Req::PreloadBatch { count }, Reply::EnqueuedBatch { ids }) => {
                self.tasks += count;
                self.ids.extend(ids);
            }
            (Req::Enqueue, Reply::Enqueued { id }) => {
                self.tasks += 1;
                self.ids.extend(id);
            }
            (Req::PreloadStatus { id }, Reply::Done) => {
                self.tasks += 1;
                self.ids.push(*id);
            }
            (req, other) => unexpected(req, other, now, stats),
        }
    }

    fn finished(&self) -> bool {
        self.remaining == 0
    }
}

/// Every workload of a run, so that one connection task drives any of them.
pub(crate) enum AnyWorkload {
    Producer(Producer),
    Consumer(Consumer),
    Status(StatusReader),
    Deps(DepsProducer),
}

impl Workload for AnyWorkload {
    fn next(&mut self, now: Instant) -> Option<(Req, Instant)> {
        match self {
            AnyWorkload::Producer(w) => w.next(now),
            AnyWorkload::Consumer(w) => w.next(now),
            AnyWorkload::Status(w) => w.next(now),
            AnyWorkload::Deps(w) => w.next(now),
        }
    }

    fn follow_up(&mut self) -> Option<(Req, Instant)> {
        match self {
            AnyWorkload::Producer(w) => w.follow_up(),
            AnyWorkload::Consumer(w) => w.follow_up(),
            AnyWorkload::Status(w) => w.follow_up(),
            AnyWorkload::Deps(w) => w.follow_up(),
        }
    }

    fn on_reply(&mut self, pending: Pending, reply: Reply, now: Instant, stats: &mut ConnStats) {
        match self {
            AnyWorkload::Producer(w) => w.on_reply(pending, reply, now, stats),
            AnyWorkload::Consumer(w) => w.on_reply(pending, reply, now, stats),
            AnyWorkload::Status(w) => w.on_reply(pending, reply, now, stats),
            AnyWorkload::Deps(w) => w.on_reply(pending, reply, now, stats),
        }
    }
}

/// An error reply, or a reply that does not answer the request: counted.
fn unexpected(req: &Req, reply: Reply, now: Instant, stats: &mut ConnStats) {
    match reply {
        Reply::Error(message) => stats.error(now, &format!("{}: {message}", req_name(req))),
        other => stats.error(now, &format!("{}: unexpected reply {other:?}", req_name(req))),
    }
}

fn req_name(req: &Req) -> &'static str {
    match req {
        Req::Hello => "hello",
        Req::Auth => "auth",
        Req::Step(_) => "handshake step",
        Req::Ping => "ping",
        Req::UseTube => "use",
        Req::WatchTube => "watch",
        Req::IgnoreDefault => "ignore",
        Req::Configure { .. } => "configure",
        Req::Enqueue => "enqueue",
        Req::EnqueueBatch | Req::PreloadBatch { .. } => "enqueue batch",
        Req::PreloadStatus { .. } => "preload status",
        Req::Dequeue => "dequeue",
        Req::Complete { .. } => "complete",
        Req::Status { .. } => "status",
        Req::DepParent { .. } => "deps parent",
        Req::DepChildren { .. } => "deps children",
        Req::DepJoin { .. } => "deps join",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::stats::Window;
    use std::time::Duration;

    fn stats() -> ConnStats {
        let now = Instant::now();
        ConnStats::new(Window { measure_start: now, end: now + Duration::from_secs(3600) })
    }

    fn reply_to<W: Workload>(w: &mut W, req: Req, reply: Reply, stats: &mut ConnStats) {
        let now = Instant::now();
        w.on_reply(Pending { req, op_start: now }, reply, now + Duration::from_micros(10), stats);
    }

    #[test]
    fn a_consumer_completes_what_it_dequeues() {
        let mut stats = stats();
        let mut consumer = Consumer::new(None, false);
        let now = Instant::now();
        assert_eq!(consumer.next(now).unwrap().0, Req::Dequeue);
        reply_to(&mut consumer, Req::Dequeue, Reply::Empty, &mut stats);
        let handle = Handle::Lease { id: 7, lease: 8 };
        reply_to(&mut consumer, Req::Dequeue, Reply::Leased { handle: handle.clone(), join_slot: None }, &mut stats);
        let (complete, _) = consumer.next(now).unwrap();
        assert_eq!(complete, Req::Complete { handle, join_slot: None });
        assert_eq!(stats.ops, 0);
        reply_to(&mut consumer, complete, Reply::Done, &mut stats);
        assert_eq!((stats.ops, stats.tasks, stats.errors), (1, 1, 0));
        // RPOP: the dequeue is the whole op.
        reply_to(&mut consumer, Req::Dequeue, Reply::Leased { handle: Handle::None, join_slot: None }, &mut stats);
        assert_eq!((stats.ops, stats.tasks), (2, 2));
        assert_eq!(consumer.next(now).unwrap().0, Req::Dequeue);
    }

    #[test]
    fn an_open_loop_consumer_finishes_its_op_from_the_scheduled_start() {
        let mut stats = stats();
        let mut consumer = Consumer::new(None, true);
        let scheduled = Instant::now();
        assert_eq!(consumer.follow_up(), None, "nothing started yet");
        // An empty dequeue is sent again at once, still timed from its schedule.
        consumer.on_reply(Pending { req: Req::Dequeue, op_start: scheduled }, Reply::Empty, scheduled, &mut stats);
        assert_eq!(consumer.follow_up(), Some((Req::Dequeue, scheduled)));
        assert_eq!(consumer.follow_up(), None);
        let handle = Handle::Id(3);
        let leased = Reply::Leased { handle: handle.clone(), join_slot: None };
        consumer.on_reply(Pending { req: Req::Dequeue, op_start: scheduled }, leased, scheduled, &mut stats);
        let complete = Req::Complete { handle, join_slot: None };
        assert_eq!(consumer.follow_up(), Some((complete.clone(), scheduled)));
        let done_at = scheduled + Duration::from_micros(250);
        consumer.on_reply(Pending { req: complete, op_start: scheduled }, Reply::Done, done_at, &mut stats);
        assert_eq!((stats.ops, stats.tasks), (1, 1));
        assert!(stats.histogram.borrow().max() >= 250_000, "timed from the scheduled dequeue");
        // The closed loop never retries by itself: its next `next` does.
        let mut closed = Consumer::new(None, false);
        closed.on_reply(Pending { req: Req::Dequeue, op_start: scheduled }, Reply::Empty, scheduled, &mut stats);
        assert_eq!(closed.follow_up(), None);
    }

    #[test]
    fn cycle_producers_feed_the_consumers_without_counting() {
        let mut stats = stats();
        let mut producer = Producer { batch: None, counted: false };
        reply_to(&mut producer, Req::Enqueue, Reply::Enqueued { id: Some(1) }, &mut stats);
        assert_eq!((stats.ops, stats.tasks, stats.errors), (0, 0, 0));
        reply_to(&mut producer, Req::Enqueue, Reply::Error("full".into()), &mut stats);
        assert_eq!(stats.errors, 1, "their errors still count");
    }

    #[test]
    fn a_dag_goes_parent_children_join_and_frees_its_slot_on_completion() {
        let mut producer_stats = stats();
        let mut consumer_stats = stats();
        let deps = Rc::new(DepsShared::new(2, 5));
        let mut producer = DepsProducer::new(deps.clone(), 1..2);
        let mut consumer = Consumer::new(Some(deps.clone()), false);
        let now = Instant::now();
        let (parent, _) = producer.next(now).unwrap();
        let marker = (5u64 << 32) | 1;
        assert_eq!(parent, Req::DepParent { slot: marker });
        assert!(producer.next(now).is_none(), "its one slot is taken");
        reply_to(&mut producer, parent, Reply::Enqueued { id: Some(100) }, &mut producer_stats);
        let (children, _) = producer.next(now).unwrap();
        assert_eq!(children, Req::DepChildren { parent: 100, slot: marker });
        let ids: Vec<u64> = (101..111).collect();
        reply_to(&mut producer, children, Reply::EnqueuedBatch { ids: ids.clone() }, &mut producer_stats);
        let (join, _) = producer.next(now).unwrap();
        assert_eq!(join, Req::DepJoin { slot: marker, children: ids });
        reply_to(&mut producer, join, Reply::Enqueued { id: Some(111) }, &mut producer_stats);
        assert!(producer.next(now).is_none(), "the DAG is still in flight");

        // A plain task, then the join.
        reply_to(
            &mut consumer,
            Req::Complete { handle: Handle::None, join_slot: None },
            Reply::Done,
            &mut consumer_stats,
        );
        assert_eq!((consumer_stats.ops, consumer_stats.tasks), (0, 1));
        let join_complete = Req::Complete { handle: Handle::Lease { id: 111, lease: 1 }, join_slot: Some(marker) };
        reply_to(&mut consumer, join_complete, Reply::Done, &mut consumer_stats);
        assert_eq!((consumer_stats.ops, consumer_stats.tasks), (1, 2));
        assert_eq!(producer.next(now).unwrap().0, Req::DepParent { slot: marker });
        // A join left over from another run is a plain task.
        let stale = Req::Complete { handle: Handle::None, join_slot: Some((4u64 << 32) | 1) };
        reply_to(&mut consumer, stale, Reply::Done, &mut consumer_stats);
        assert_eq!((consumer_stats.ops, consumer_stats.tasks), (1, 3));
        assert_eq!(producer_stats.errors + consumer_stats.errors, 0);
    }

    #[test]
    fn a_failed_step_frees_the_dag_slot() {
        let mut s = stats();
        let deps = Rc::new(DepsShared::new(1, 1));
        let mut producer = DepsProducer::new(deps, 0..1);
        let now = Instant::now();
        let (parent, _) = producer.next(now).unwrap();
        reply_to(&mut producer, parent, Reply::Error("overloaded".into()), &mut s);
        assert_eq!(s.errors, 1);
        assert!(matches!(producer.next(now), Some((Req::DepParent { .. }, _))));
    }
}
