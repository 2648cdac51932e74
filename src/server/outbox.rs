//! Where a worker sends a request's reply, and when it may leave.
//!
//! Every reply goes back to the reactor that owns its connection, tagged with
//! the LSN of the newest state it shows (in `sync` mode: the last record
//! appended when it was made, its own included; otherwise 0). A reply whose
//! LSN the durable watermark (`crate::wal::watermark`) has already reached
//! goes straight on; any other is pushed into its reactor's [`Mailbox`], and
//! the reactor's delivery task holds it in its outbox (`crate::core::outbox`)
//! until the log writer's next advance reaches it. The log writer never sees
//! a reply: it only advances the watermark, which wakes the reactors that
//! hold replies it covers.
//!
//! Two ways back to the reactor:
//!
//! - [`ReplyTo::Task`]: a oneshot channel a reactor task awaits. HTTP requests
//!   use it (their processor answers in request order), and so do binary long
//!   polls (their task also watches for the peer leaving, and the worker drops
//!   a poll whose receiver is gone). A held one travels through the mailbox
//!   and the reactor sends it on the channel once released.
//! - [`ReplyTo::Mailbox`]: every other binary request. The reply is pushed,
//!   tagged with its connection and request id, into its reactor's [`Mailbox`];
//!   one reactor task drains the mailbox and encodes each released reply into
//!   its connection's output. Why: a oneshot per request costs a channel and a
//!   spawned task per request, and a cross-thread wake of the reactor per
//!   reply. The mailbox wakes its reactor only when it goes from drained to
//!   non-empty, so a worker batch of replies costs one wake (measured in
//!   docs/benchmarks/changelog.md).
//!
//! A worker holds the wakes back until its batch is done ([`batch_wakes`]):
//! the reactor then finds the whole batch's replies at once, instead of
//! waking for the first and going back to sleep before the rest arrive.
//!
//! A mailbox reply that is dropped unsent (the workers stopped with the request
//! still queued) is delivered as `None`, so its connection still answers
//! `shutting_down` and never waits for it forever.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{oneshot, Notify};

use crate::command::Reply;
use crate::core::outbox::Outbox;
use crate::wal::watermark::{Listener, Watermark};

/// Identifies a binary connection within its reactor: a slot and the slot's
/// generation, so a reply for a connection that has gone is never delivered
/// to a later connection in the same slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConnKey {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

/// Where a delivered reply goes on its reactor.
pub(crate) enum Target {
    /// A binary connection's request (encoded by the connection), and when
    /// its connection took it (`stats::LatencyClock`, for its latency).
    Conn { conn: ConnKey, request_id: u64, opcode: u8, taken_us: u32 },
    /// A task that awaits the reply (HTTP requests, binary long polls).
    Task(oneshot::Sender<Reply>),
}

/// A reply on its way to its reactor.
pub(crate) struct Delivery {
    pub(crate) target: Target,
    /// The LSN of the newest state the reply shows: it leaves once the
    /// durable watermark has reached it (0: at once).
    pub(crate) lsn: u64,
    /// `None`: the request was dropped unanswered (the workers stopped).
    pub(crate) reply: Option<Reply>,
}

/// The replies waiting for one reactor: written by any thread, drained by the
/// reactor's delivery task, which holds those the watermark has not reached
/// in the reactor's outbox (`crate::core::outbox`).
///
/// Wakes: a reply the watermark already covers wakes the reactor (the first
/// such one after a drain); a reply it does not cover wakes nobody, since
/// the reactor could only hold it: the log writer's advance that covers it
/// wakes the reactor instead, so in `sync` mode a batch of replies costs the
/// reactor one wake (at the sync), not two.
pub(crate) struct Mailbox {
    pending: Mutex<Pending>,
    wake: Notify,
    /// Called with every signal, for a reactor that does not await [`Mailbox::wait`]
    /// (the experimental io-uring reactor, `ring/`, wakes its ring through an eventfd).
    wake_hook: OnceLock<Box<dyn Fn() + Send + Sync>>,
    watermark: Arc<Watermark>,
    /// The smallest LSN the reactor's outbox holds (`u64::MAX`: none).
    held_lsn_min: AtomicU64,
    /// The smallest LSN among replies pushed since the last `take` without
    /// waking the reactor (`u64::MAX`: none). With `held_lsn_min`, what an
    /// advance must reach to be worth a wake.
    untaken_lsn_min: AtomicU64,
}

#[derive(Default)]
struct Pending {
    deliveries: Vec<Delivery>,
    /// A reply pushed since the last `take` has woken the reactor.
    signalled: bool,
}

impl Listener for Mailbox {
    fn advanced(&self, durable_lsn: u64) {
        let waiting_min = self.held_lsn_min.load(Ordering::SeqCst).min(self.untaken_lsn_min.load(Ordering::SeqCst));
        if waiting_min <= durable_lsn || self.watermark.failed().is_some() {
            self.signal();
        }
    }
}

impl Mailbox {
    /// A reactor's mailbox, told of every advance of `watermark`.
    pub(crate) fn new(watermark: &Arc<Watermark>) -> Arc<Mailbox> {
        let mailbox = Arc::new(Mailbox {
            pending: Mutex::default(),
            wake: Notify::new(),
            wake_hook: OnceLock::new(),
            watermark: watermark.clone(),
            held_lsn_min: AtomicU64::new(u64::MAX),
            untaken_lsn_min: AtomicU64::new(u64::MAX),
        });
        watermark.listen(mailbox.clone());
        mailbox
    }

    /// Wakes whoever drains the mailbox: the task in [`Mailbox::wait`], and
    /// the wake hook if one is set.
    fn signal(&self) {
        self.wake.notify_one();
        if let Some(hook) = self.wake_hook.get() {
            hook();
        }
    }

    /// Sets the hook every signal calls (once; a second call is a bug).
    pub(crate) fn set_wake_hook(&self, hook: Box<dyn Fn() + Send + Sync>) {
        assert!(self.wake_hook.set(hook).is_ok(), "a mailbox has one wake hook");
    }

    pub(crate) fn watermark(&self) -> &Watermark {
        &self.watermark
    }

    /// Publishes the smallest LSN the outbox holds. The caller then reads the
    /// watermark again (`watermark.rs`, "Ordering"), so an advance between
    /// its last release and this store is not missed.
    pub(crate) fn set_held_lsn_min(&self, lsn: u64) {
        self.held_lsn_min.store(lsn, Ordering::SeqCst);
    }

    fn push(self: &Arc<Self>, delivery: Delivery) {
        let lsn = delivery.lsn;
        let ready = self.watermark.settled(lsn);
        let signal = {
            let mut pending = crate::sync::lock(&self.pending);
            pending.deliveries.push(delivery);
            ready && !std::mem::replace(&mut pending.signalled, true)
        };
        if ready {
            // Only the first ready reply after a drain wakes the reactor; later
            // ones ride along. `notify_one` stores a permit when the task is not
            // waiting yet, so a push between its drain and its next wait is not
            // missed.
            if signal && !defer_wake(self) {
                self.signal();
            }
            return;
        }
        self.untaken_lsn_min.fetch_min(lsn, Ordering::SeqCst);
        // Read again after publishing (watermark.rs, "Ordering"): an advance
        // in between saw no reason to wake the reactor.
        if self.watermark.settled(lsn) && !defer_wake(self) {
            self.signal();
        }
    }

    /// Swaps the waiting deliveries into `into` (empty on entry, so its
    /// allocation is reused by the next pushes).
    pub(crate) fn take(&self, into: &mut Vec<Delivery>) {
        assert!(into.is_empty());
        let mut pending = crate::sync::lock(&self.pending);
        std::mem::swap(&mut pending.deliveries, into);
        pending.signalled = false;
        // Under the lock: a push whose delivery this take missed publishes
        // its LSN after its own locked section, so after this store.
        self.untaken_lsn_min.store(u64::MAX, Ordering::SeqCst);
    }

    /// Waits until something was pushed since the last `take`, or the
    /// watermark reached a held reply (or returns at once if either already
    /// signalled).
    pub(crate) async fn wait(&self) {
        self.wake.notified().await;
    }
}

thread_local! {
    /// Mailboxes whose wake this thread holds back (inside [`batch_wakes`]);
    /// `None` outside it, where pushes wake at once.
    static DEFERRED: RefCell<Option<Vec<Arc<Mailbox>>>> = const { RefCell::new(None) };
}

/// Holds back `mailbox`'s wake if this thread is inside [`batch_wakes`].
/// Called only for the first push after a drain, so the list stays as short
/// as the number of reactors.
fn defer_wake(mailbox: &Arc<Mailbox>) -> bool {
    DEFERRED.with(|deferred| match &mut *deferred.borrow_mut() {
        Some(list) => {
            if !list.iter().any(|held| Arc::ptr_eq(held, mailbox)) {
                list.push(mailbox.clone());
            }
            true
        }
        None => false,
    })
}

/// Runs `work` with the wakes of the mailboxes it pushes to held back, then
/// wakes each of them once.
pub(crate) fn batch_wakes<T>(work: impl FnOnce() -> T) -> T {
    struct Flush;
    impl Drop for Flush {
        // Also on unwind: a panicking batch must not leave replies unannounced.
        fn drop(&mut self) {
            let list = DEFERRED.with(|deferred| deferred.borrow_mut().take()).unwrap_or_default();
            for mailbox in list {
                mailbox.signal();
            }
        }
    }
    let nested = DEFERRED.with(|deferred| {
        let mut deferred = deferred.borrow_mut();
        let nested = deferred.is_some();
        if !nested {
            *deferred = Some(Vec::new());
        }
        nested
    });
    if nested {
        return work();
    }
    let _flush = Flush;
    work()
}

/// A reply owed to a binary connection through its reactor's mailbox.
pub(crate) struct MailboxReply {
    mailbox: Arc<Mailbox>,
    conn: ConnKey,
    request_id: u64,
    opcode: u8,
    sent: bool,
    /// When the connection took the request (fits in the padding: `Job`
    /// keeps its size class).
    taken_us: u32,
}

impl MailboxReply {
    pub(crate) fn new(
        mailbox: Arc<Mailbox>,
        conn: ConnKey,
        request_id: u64,
        opcode: u8,
        taken_us: u32,
    ) -> MailboxReply {
        MailboxReply { mailbox, conn, request_id, opcode, sent: false, taken_us }
    }

    /// Forgets the reply without delivering anything (the request was refused
    /// before any worker saw it, and the connection answered it itself).
    pub(crate) fn cancel(mut self) {
        self.sent = true;
    }

    fn deliver(&mut self, reply: Option<Reply>, lsn: u64) {
        self.sent = true;
        let target =
            Target::Conn { conn: self.conn, request_id: self.request_id, opcode: self.opcode, taken_us: self.taken_us };
        self.mailbox.push(Delivery { target, lsn, reply });
    }
}

impl Drop for MailboxReply {
    fn drop(&mut self) {
        if !self.sent {
            self.deliver(None, 0);
        }
    }
}

/// Where the reply to one request goes.
pub(crate) enum ReplyTo {
    /// A task awaits it; `mailbox` is its reactor's, where it waits for the
    /// watermark if it must.
    Task {
        sender: oneshot::Sender<Reply>,
        mailbox: Arc<Mailbox>,
    },
    Mailbox(MailboxReply),
}

impl ReplyTo {
    /// Sends the reply, to leave once the durable watermark reaches `lsn`
    /// (the newest state it shows; 0 for none). Whoever asked may be gone
    /// (the client hung up): then the reply is dropped, which is all there
    /// is to do.
    pub(crate) fn send(self, reply: Reply, lsn: u64) {
        match self {
            ReplyTo::Task { sender, mailbox } => {
                if lsn <= mailbox.watermark.durable_lsn() {
                    let _ = sender.send(reply);
                } else {
                    mailbox.push(Delivery { target: Target::Task(sender), lsn, reply: Some(reply) });
                }
            }
            ReplyTo::Mailbox(mut mailbox) => mailbox.deliver(Some(reply), lsn),
        }
    }

    /// Whether nobody waits for the reply any more (only known for task
    /// replies: a mailbox reply's connection is looked up on delivery).
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            ReplyTo::Task { sender, .. } => sender.is_closed(),
            ReplyTo::Mailbox(_) => false,
        }
    }
}

/// A reactor's one releasing task: drains the mailbox whenever it is
/// signalled (a worker pushed, or the watermark reached a held reply), hands
/// `deliver` what the durable watermark covers, and holds the rest in the
/// reactor's outbox.
/// `before_pass` runs before each pass (the reactor forgets its clock
/// reading there: one reading serves a pass's replies).
pub(crate) async fn release_loop(mailbox: Arc<Mailbox>, before_pass: impl Fn(), deliver: impl Fn(Delivery)) {
    let mut releaser = Releaser::default();
    loop {
        mailbox.wait().await;
        before_pass();
        releaser.release(&mailbox, &deliver);
    }
}

/// What a reactor's releasing keeps between passes: the reactor's outbox and
/// a reused batch.
#[derive(Default)]
pub(crate) struct Releaser {
    batch: Vec<Delivery>,
    outbox: Outbox<Delivery>,
}

impl Releaser {
    /// One pass after a signal: drains the mailbox, hands `deliver` what the
    /// durable watermark covers, and holds the rest.
    pub(crate) fn release(&mut self, mailbox: &Mailbox, deliver: impl Fn(Delivery)) {
        let Releaser { batch, outbox } = self;
        let watermark = mailbox.watermark();
        mailbox.take(batch);
        let durable_lsn = watermark.durable_lsn();
        for delivery in batch.drain(..) {
            if delivery.lsn <= durable_lsn {
                deliver(delivery);
            } else {
                outbox.hold(delivery.lsn, delivery);
            }
        }
        loop {
            if watermark.failed().is_some() {
                outbox.release_all(&deliver);
            } else {
                outbox.release(watermark.durable_lsn(), &deliver);
            }
            mailbox.set_held_lsn_min(outbox.lsn_min());
            // Read again after publishing (watermark.rs, "Ordering"): an
            // advance in between woke nobody, so release what it covers here.
            if outbox.is_empty() || (outbox.lsn_min() > watermark.durable_lsn() && watermark.failed().is_none()) {
                break;
            }
        }
    }
}

/// Where a released delivery goes and the reply it carries: its own, or
/// `storage_failed` if the log failed before the records it shows were durable.
pub(crate) fn released(delivery: Delivery, watermark: &Watermark) -> (Target, Option<Reply>) {
    let Delivery { target, lsn, reply } = delivery;
    let reply = match (reply, watermark.failed()) {
        (Some(_), Some(reason)) if lsn > watermark.durable_lsn() => Some(Reply::StorageFailed(Arc::from(format!(
            "the write-ahead log failed ({reason}); the server is stopping and this request may or may not have been \
             recorded"
        )))),
        (reply, _) => reply,
    };
    (target, reply)
}

/// Roughly how many bytes `reply` takes once encoded (either protocol; HTTP's
/// JSON escapes or base64 may take more, a third more for base64): its
/// payloads, results and strings plus a fixed allowance per item. Used to
/// count answered replies that wait unencoded against a connection's reply
/// budget, so the count need not encode them.
pub(crate) fn reply_bytes_estimate(reply: &Reply) -> usize {
    match reply {
        Reply::Leased(tasks) => tasks
            .iter()
            .map(|task| ITEM_BYTES + task.payload.len() + task.queue.len() + task.group.as_ref().map_or(0, |g| g.len()))
            .sum::<usize>()
            .saturating_add(ITEM_BYTES),
        Reply::Task(view) => view_bytes(view),
        Reply::TaskPage(page) => page.tasks.iter().map(view_bytes).sum::<usize>().saturating_add(ITEM_BYTES),
        Reply::Queues(queues) => ITEM_BYTES * (queues.len() + 1) + queues.iter().map(|q| q.name.len()).sum::<usize>(),
        Reply::EnqueuedBatch(items) => ITEM_BYTES + 32 * items.len(),
        Reply::CompletedBatch(items) => ITEM_BYTES + 32 * items.len(),
        Reply::StorageFailed(reason) => ITEM_BYTES + reason.len(),
        _ => ITEM_BYTES,
    }
}

/// Headers, ids, counts and field names of one item of a reply.
const ITEM_BYTES: usize = 128;

/// [`reply_bytes_estimate`] of one task view.
fn view_bytes(view: &crate::engine::TaskView) -> usize {
    ITEM_BYTES
        + view.payload.len()
        + view.result.as_ref().map_or(0, |r| r.len())
        + view.error.as_ref().map_or(0, |e| e.len())
        + view.key.as_ref().map_or(0, |k| k.len())
        + view.queue.len()
        + view.group.as_ref().map_or(0, |g| g.len())
        + 8 * view.depends_on.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Some reply; which one does not matter to the mailbox.
    fn any_reply() -> Reply {
        Reply::QueueDeleted { queue: String::new() }
    }

    fn mailbox() -> Arc<Mailbox> {
        Mailbox::new(&Arc::new(Watermark::default()))
    }

    fn reply_to(mailbox: &Arc<Mailbox>, request_id: u64) -> ReplyTo {
        ReplyTo::Mailbox(MailboxReply::new(mailbox.clone(), ConnKey { slot: 3, generation: 7 }, request_id, 9, 0))
    }

    #[test]
    fn a_reply_estimate_counts_its_payloads_so_parked_answers_count_against_the_budget() {
        use crate::engine::{TaskState, TaskView};
        let view = TaskView {
            id: 1,
            queue: "q".into(),
            state: TaskState::Ready,
            payload: bytes::Bytes::from(vec![0u8; 1 << 20]),
            priority: 0,
            group: None,
            depends_on: Vec::new(),
            key: None,
            attempts: 0,
            max_attempts: 1,
            result: Some(bytes::Bytes::from(vec![0u8; 1000])),
            error: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            not_before_ms: None,
            lease_expires_at_ms: None,
            purge_at_ms: None,
        };
        let estimate = reply_bytes_estimate(&Reply::Task(view));
        assert!(((1 << 20) + 1000..(1 << 20) + 4096).contains(&estimate), "{estimate}");
        assert!(reply_bytes_estimate(&any_reply()) > 0, "every answer counts for something");
    }

    #[test]
    fn a_sent_reply_is_delivered_once_with_its_tags() {
        let mailbox = mailbox();
        reply_to(&mailbox, 41).send(any_reply(), 0);
        let mut taken = Vec::new();
        mailbox.take(&mut taken);
        assert_eq!(taken.len(), 1);
        let delivery = &taken[0];
        let Target::Conn { conn, request_id, opcode, .. } = delivery.target else { panic!("not a connection's reply") };
        assert_eq!((conn, request_id, opcode), (ConnKey { slot: 3, generation: 7 }, 41, 9));
        assert!(matches!(&delivery.reply, Some(Reply::QueueDeleted { queue }) if queue.is_empty()));
    }

    #[test]
    fn a_reply_dropped_unsent_is_delivered_as_none() {
        let mailbox = mailbox();
        drop(reply_to(&mailbox, 5));
        let mut taken = Vec::new();
        mailbox.take(&mut taken);
        assert_eq!(taken.len(), 1);
        assert!(taken[0].reply.is_none());
    }

    /// Polls `wait` once: whether it is already signalled.
    fn signalled(mailbox: &Mailbox) -> bool {
        use std::future::Future;
        use std::task::{Context, Waker};
        let mut wait = std::pin::pin!(mailbox.wait());
        wait.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_ready()
    }

    #[test]
    fn only_the_first_push_after_a_drain_signals_and_a_signal_before_the_wait_is_kept() {
        let mailbox = mailbox();
        reply_to(&mailbox, 1).send(any_reply(), 0);
        reply_to(&mailbox, 2).send(any_reply(), 0);
        // The signal was stored before anyone waited: the wait returns at once.
        assert!(signalled(&mailbox));
        let mut taken = Vec::new();
        mailbox.take(&mut taken);
        assert_eq!(taken.len(), 2);
        // The second push found the mailbox non-empty and stored no second signal.
        assert!(!signalled(&mailbox), "one signal per drain, not per reply");
        reply_to(&mailbox, 3).send(any_reply(), 0);
        assert!(signalled(&mailbox), "the first push after a drain signals again");
    }

    #[test]
    fn a_held_task_reply_goes_through_the_mailbox_and_an_advance_wakes_only_for_what_it_covers() {
        let watermark = Arc::new(Watermark::new(4));
        let mailbox = Mailbox::new(&watermark);
        // Covered already: straight to the task, the mailbox stays quiet.
        let (sender, mut receiver) = oneshot::channel();
        ReplyTo::Task { sender, mailbox: mailbox.clone() }.send(any_reply(), 4);
        assert!(receiver.try_recv().is_ok());
        assert!(!signalled(&mailbox));
        // Not yet durable: it waits in the mailbox, and wakes nobody yet.
        let (sender, mut receiver) = oneshot::channel();
        ReplyTo::Task { sender, mailbox: mailbox.clone() }.send(any_reply(), 7);
        assert!(receiver.try_recv().is_err(), "sent before the watermark reached it");
        assert!(!signalled(&mailbox), "a reply the reactor could only hold woke it");
        watermark.advance(6);
        assert!(!signalled(&mailbox), "an advance short of it wakes nobody");
        watermark.advance(7);
        assert!(signalled(&mailbox), "the advance that covers it wakes the reactor to take it");
        let mut taken = Vec::new();
        mailbox.take(&mut taken);
        assert_eq!((taken.len(), taken[0].lsn), (1, 7));
        // Taken but (say) not yet released: the reactor holds it in its outbox.
        let (sender, _receiver) = oneshot::channel();
        ReplyTo::Task { sender, mailbox: mailbox.clone() }.send(any_reply(), 9);
        taken.clear();
        mailbox.take(&mut taken);
        mailbox.set_held_lsn_min(9);
        watermark.advance(8);
        assert!(!signalled(&mailbox), "an advance short of the held reply wakes nobody");
        watermark.advance(9);
        assert!(signalled(&mailbox), "the advance that covers the held reply wakes the reactor");
        watermark.fail(Arc::from("disk gone"));
        assert!(signalled(&mailbox), "a failure wakes it too (held replies become storage_failed)");
        let (_, reply) = released(taken.pop().unwrap(), &watermark);
        assert!(matches!(reply, Some(Reply::QueueDeleted { .. })), "durable before the failure: its own reply");
        // A reply past the failed watermark: answered storage_failed.
        let delivery = Delivery { target: Target::Task(oneshot::channel().0), lsn: 10, reply: Some(any_reply()) };
        assert!(matches!(released(delivery, &watermark).1, Some(Reply::StorageFailed(_))));
    }

    #[test]
    fn the_wake_hook_is_called_with_each_signal_and_not_for_a_reply_that_rides_along() {
        use std::sync::atomic::AtomicUsize;
        let watermark = Arc::new(Watermark::new(4));
        let mailbox = Mailbox::new(&watermark);
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        mailbox.set_wake_hook(Box::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        }));
        reply_to(&mailbox, 1).send(any_reply(), 0);
        reply_to(&mailbox, 2).send(any_reply(), 0);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one call per drain, like the signal");
        let mut taken = Vec::new();
        mailbox.take(&mut taken);
        batch_wakes(|| reply_to(&mailbox, 3).send(any_reply(), 0));
        assert_eq!(calls.load(Ordering::SeqCst), 2, "a batch's held wake calls it at the batch's end");
        taken.clear();
        mailbox.take(&mut taken);
        reply_to(&mailbox, 4).send(any_reply(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 2, "a reply waiting for the log wakes nobody");
        watermark.advance(7);
        assert_eq!(calls.load(Ordering::SeqCst), 3, "the advance that covers it calls the hook");
    }

    #[test]
    fn inside_batch_wakes_the_signal_waits_for_the_end_of_the_batch() {
        let mailbox = mailbox();
        batch_wakes(|| {
            reply_to(&mailbox, 1).send(any_reply(), 0);
            assert!(!signalled(&mailbox), "held back during the batch");
            batch_wakes(|| reply_to(&mailbox, 2).send(any_reply(), 0));
            assert!(!signalled(&mailbox), "a nested batch leaves the wake to the outer one");
        });
        assert!(signalled(&mailbox), "one wake at the end of the batch");
        let mut taken = Vec::new();
        mailbox.take(&mut taken);
        assert_eq!(taken.len(), 2);
        reply_to(&mailbox, 3).send(any_reply(), 0);
        assert!(signalled(&mailbox), "outside a batch a push wakes at once");
    }
}
