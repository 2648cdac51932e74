//! The durable watermark: the LSN up to which every record is on disk, and
//! the one way a reply learns that what it shows is durable.
//!
//! The log writer (`committer.rs`) is its only writer: after each batch's
//! `fdatasync` returns it calls [`Watermark::advance`], and after a failed
//! write or sync [`Watermark::fail`]. Whoever holds replies back (each
//! reactor's outbox, `server/outbox.rs`) registers a [`Listener`] and is told
//! of every advance; it reads the watermark and releases what it covers. No
//! reply, closure or channel of a request ever reaches the log writer's
//! thread: it only writes, syncs and advances this number.
//!
//! Ordering: `advance` stores the LSN before it calls the listeners, and a
//! listener that publishes "I hold replies from LSN n" must read the
//! watermark again after publishing (both `SeqCst`), so an advance that
//! races with the publication is seen by one side or the other, never lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Told of every advance of the watermark (and of its failure). Called on
/// the log writer's thread: it must only note the fact and wake its owner.
pub trait Listener: Send + Sync {
    fn advanced(&self, durable_lsn: u64);
}

pub struct Watermark {
    durable_lsn: AtomicU64,
    /// Why the log stopped (fail-stop): records past `durable_lsn` will never
    /// be durable, so replies waiting for them are answered `storage_failed`.
    failed: OnceLock<Arc<str>>,
    listeners: Mutex<Vec<Arc<dyn Listener>>>,
}

impl Default for Watermark {
    fn default() -> Self {
        Watermark::new(0)
    }
}

impl Watermark {
    pub fn new(durable_lsn: u64) -> Watermark {
        Watermark { durable_lsn: AtomicU64::new(durable_lsn), failed: OnceLock::new(), listeners: Mutex::default() }
    }

    /// Every record with an LSN up to this one is durable.
    pub fn durable_lsn(&self) -> u64 {
        self.durable_lsn.load(Ordering::SeqCst)
    }

    /// Why the log stopped, if it did.
    pub fn failed(&self) -> Option<&Arc<str>> {
        self.failed.get()
    }

    /// Whether a reply that shows state up to `lsn` may leave now: its
    /// records are durable, or never will be (then it is answered
    /// `storage_failed` instead: see [`Watermark::failed`]).
    pub fn settled(&self, lsn: u64) -> bool {
        lsn <= self.durable_lsn() || self.failed.get().is_some()
    }

    /// Registers `listener` for every later advance.
    pub fn listen(&self, listener: Arc<dyn Listener>) {
        crate::sync::lock(&self.listeners).push(listener);
    }

    /// Records that everything up to `lsn` is durable. LSNs only grow: a
    /// watermark that would go back is a bug in the log writer, and stopping
    /// beats releasing replies twice or out of order.
    pub fn advance(&self, lsn: u64) {
        let previous = self.durable_lsn.swap(lsn, Ordering::SeqCst);
        assert!(previous <= lsn, "the durable watermark went back from {previous} to {lsn}");
        self.tell(lsn);
    }

    /// Records that the log stopped: nothing past the watermark will be durable.
    pub fn fail(&self, reason: Arc<str>) {
        let _ = self.failed.set(reason);
        self.tell(self.durable_lsn());
    }

    fn tell(&self, lsn: u64) {
        for listener in crate::sync::lock(&self.listeners).iter() {
            listener.advanced(lsn);
        }
    }
}
