//! Group commit: one thread owns the log. Executing threads append records to
//! its buffer (under the engine lock, so log order is execution order and the
//! LSN is the record's position); the thread writes what has gathered as one
//! batch with one write and one `fdatasync`, then advances the durable
//! [`Watermark`]. That is all it does: no reply is built, sent or called back
//! on its thread (replies wait in their reactors' outboxes for the watermark,
//! `server/outbox.rs`). Records that arrive while a sync is in flight wait for
//! the next one, so under load many requests share a sync, and alone a
//! request waits about one sync.
//!
//! Fail-stop: if a write or sync fails, the watermark is marked failed and
//! stays where it was; nothing appended afterwards is written, and nothing is
//! retried.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::format::{BATCH_BODY_BYTES_MAX, RECORD_HEADER_BYTES};
use super::log::Log;
use super::storage::Storage;
pub use super::watermark::Watermark;

/// Called once when the log fails (see [`CommitterOptions::on_failure`]).
pub type FailureHook = Box<dyn FnOnce(&CommitError) + Send>;

/// Called on the WAL thread after each batch is written and synced (see
/// [`CommitterOptions::on_batch`]).
pub type BatchHook = Box<dyn Fn(&BatchReport) + Send>;

/// One batch the log writer wrote and synced (for `/metrics`).
#[derive(Clone, Copy, Debug)]
pub struct BatchReport {
    pub records: u64,
    /// The records' bytes (without the log's headers and padding).
    pub bytes: u64,
    /// The batch's write and `fdatasync` together.
    pub sync_duration: Duration,
}

/// The log stopped (fail-stop); the message says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitError(pub Arc<str>);

/// Records in one batch at most: bounds the latency the last of them adds.
pub const BATCH_RECORDS_MAX: usize = 4096;

/// Records appended and not yet taken by the writer, and the LSN the next one
/// gets. Pure (no thread, no I/O), so the simulator (`crate::sim`) drives the
/// same buffer the server does.
#[derive(Debug)]
pub struct LogBuffer {
    pending: Vec<Vec<u8>>,
    next_lsn: u64,
}

impl LogBuffer {
    /// An empty buffer whose first record will have `next_lsn`.
    pub fn new(next_lsn: u64) -> LogBuffer {
        assert!(next_lsn >= 1, "LSNs start at 1");
        LogBuffer { pending: Vec::new(), next_lsn }
    }

    /// Appends `record`; returns its LSN (its position in the log).
    pub fn append(&mut self, record: Vec<u8>) -> u64 {
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        self.pending.push(record);
        lsn
    }

    /// The LSN of the last record appended (0 if none ever was).
    pub fn last_lsn(&self) -> u64 {
        self.next_lsn - 1
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Moves the oldest records into `batch` (empty on entry), as many as fit
    /// one log batch ([`BATCH_RECORDS_MAX`], `BATCH_BODY_BYTES_MAX`; at least
    /// one). Returns the LSNs they have.
    pub fn take_batch(&mut self, batch: &mut Vec<Vec<u8>>) -> Range<u64> {
        assert!(batch.is_empty());
        let mut body_bytes = 0;
        let mut take = 0;
        for record in &self.pending {
            let record_bytes = (RECORD_HEADER_BYTES + record.len() + 7) & !7;
            if take == BATCH_RECORDS_MAX || (take > 0 && body_bytes + record_bytes > BATCH_BODY_BYTES_MAX) {
                break;
            }
            body_bytes += record_bytes;
            take += 1;
        }
        let first = self.next_lsn - self.pending.len() as u64;
        batch.extend(self.pending.drain(..take));
        first..first + take as u64
    }

    /// Forgets every record not yet taken (the log failed: none will be written).
    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

struct Inbox {
    buffer: LogBuffer,
    /// When the oldest pending record arrived (for the linger of interval mode).
    oldest_pending_at: Option<Instant>,
    stopping: bool,
    failed: bool,
    /// A checkpoint covers every record up to this LSN: remove the segments
    /// wholly below it (done on the WAL thread, which owns the log).
    remove_through: Option<u64>,
}

/// How the thread batches. The default is `sync` mode: write as soon as
/// anything is waiting.
#[derive(Default)]
pub struct CommitterOptions {
    /// Wait this long after the oldest waiting record arrived before writing, to
    /// gather more (the `interval:<ms>` mode, whose replies do not wait).
    pub linger: Duration,
    /// Called once, on the WAL thread, when a write or sync fails (fail-stop:
    /// the server stops).
    pub on_failure: Option<FailureHook>,
    /// Told of every batch written and synced, on the WAL thread (the
    /// server's metrics; one call per batch, not per record).
    pub on_batch: Option<BatchHook>,
}

pub struct Committer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    inbox: Mutex<Inbox>,
    wake: Condvar,
    /// The LSN of the last record appended: read without the inbox lock by
    /// replies that show state up to it (`sync` mode reads).
    appended_lsn: AtomicU64,
    watermark: Arc<Watermark>,
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Inbox> {
    crate::sync::lock(&shared.inbox)
}

impl Committer {
    pub fn start<S>(log: Log<S>) -> std::io::Result<Committer>
    where
        S: Storage + Send + 'static,
        S::File: Send,
    {
        Committer::start_with(log, CommitterOptions::default(), Arc::default())
    }

    /// Starts the thread; `watermark` is advanced as records become durable
    /// (it starts at the last LSN the log already holds).
    pub fn start_with<S>(
        log: Log<S>,
        options: CommitterOptions,
        watermark: Arc<Watermark>,
    ) -> std::io::Result<Committer>
    where
        S: Storage + Send + 'static,
        S::File: Send,
    {
        let next_lsn = log.next_lsn();
        watermark.advance(next_lsn - 1);
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox {
                buffer: LogBuffer::new(next_lsn),
                oldest_pending_at: None,
                stopping: false,
                failed: false,
                remove_through: None,
            }),
            wake: Condvar::new(),
            appended_lsn: AtomicU64::new(next_lsn - 1),
            watermark,
        });
        let thread_shared = shared.clone();
        let thread =
            std::thread::Builder::new().name("tqx-wal".into()).spawn(move || run(log, &thread_shared, options))?;
        Ok(Committer { shared, thread: Some(thread) })
    }

    /// Appends `record` to the log buffer and returns its LSN. Called under
    /// the engine lock by the thread that executed the record's command, so
    /// LSN order is execution order. After a failure the record is dropped
    /// (its LSN is never durable; the watermark says the log failed).
    pub fn append(&self, record: Vec<u8>) -> u64 {
        let mut inbox = lock(&self.shared);
        if inbox.failed {
            return inbox.buffer.last_lsn() + 1;
        }
        let was_empty = inbox.buffer.is_empty();
        if was_empty {
            inbox.oldest_pending_at = Some(Instant::now());
        }
        let lsn = inbox.buffer.append(record);
        self.shared.appended_lsn.store(lsn, Ordering::Release);
        drop(inbox);
        // The WAL thread sleeps only on an empty buffer (or lingers, in interval
        // mode, until a deadline that a new record does not move), so only the
        // first record after it took a batch needs to wake it. A notify costs a
        // futex syscall even with nobody waiting: once per batch, not per record.
        if was_empty {
            self.shared.wake.notify_one();
        }
        lsn
    }

    /// Asks the WAL thread to remove the segments whose records all have LSNs up
    /// to `lsn`, between two batches.
    pub fn remove_through(&self, lsn: u64) {
        let mut inbox = lock(&self.shared);
        inbox.remove_through = Some(inbox.remove_through.map_or(lsn, |old| old.max(lsn)));
        drop(inbox);
        self.shared.wake.notify_one();
    }

    /// The LSN of the last record appended so far (0 if none ever was).
    pub fn last_appended_lsn(&self) -> u64 {
        self.shared.appended_lsn.load(Ordering::Acquire)
    }

    /// Every record with an LSN up to this one is durable.
    pub fn durable_lsn(&self) -> u64 {
        self.shared.watermark.durable_lsn()
    }

    pub fn watermark(&self) -> &Arc<Watermark> {
        &self.shared.watermark
    }

    /// Writes what is queued, then stops the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        lock(&self.shared).stopping = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run<S: Storage>(mut log: Log<S>, shared: &Shared, mut options: CommitterOptions) {
    let mut batch: Vec<Vec<u8>> = Vec::new();
    loop {
        let lsns = {
            let mut inbox = lock(shared);
            while inbox.buffer.is_empty() && !inbox.stopping && inbox.remove_through.is_none() {
                inbox = crate::sync::wait(&shared.wake, inbox);
            }
            if let Some(lsn) = inbox.remove_through.take() {
                drop(inbox);
                match log.remove_through(lsn) {
                    Ok(0) => {}
                    Ok(removed) => {
                        tracing::debug!(removed, through_lsn = lsn, "removed WAL segments below the checkpoint")
                    }
                    Err(error) => tracing::warn!(%error, "could not remove a WAL segment below the checkpoint; kept"),
                }
                continue;
            }
            if inbox.buffer.is_empty() {
                // Stopping with everything written and synced: mark the log
                // closed cleanly, so the next open takes no damage at its end
                // for a crash's tear. (A failed log stays unmarked.)
                if !inbox.failed {
                    if let Err(error) = log.close_cleanly() {
                        tracing::warn!(%error, "could not mark the write-ahead log closed cleanly");
                    }
                }
                return;
            }
            // Interval mode: let records gather until the oldest has waited `linger`.
            while !inbox.stopping {
                let waited = inbox.oldest_pending_at.map_or(options.linger, |t| t.elapsed());
                let Some(left) = options.linger.checked_sub(waited).filter(|d| !d.is_zero()) else { break };
                inbox = crate::sync::wait_timeout(&shared.wake, inbox, left);
            }
            let lsns = inbox.buffer.take_batch(&mut batch);
            // Records left over (a batch takes at most BATCH_RECORDS_MAX) have
            // been waiting since before this batch was taken: they go in the
            // next batch at once. Restarting their linger here made
            // `interval:1000` sync at most 4,096 records a second, so under
            // load an acknowledged record waited far past its interval (and a
            // stop waited for the backlog: 67 s after 1.5 s of enqueues).
            if inbox.buffer.is_empty() {
                inbox.oldest_pending_at = None;
            }
            lsns
        };
        let records = batch.len() as u64;
        let bytes = batch.iter().map(|record| record.len() as u64).sum();
        let started = Instant::now();
        let result = log.append(&batch);
        let sync_duration = started.elapsed();
        batch.clear();
        match result {
            Ok(written) => {
                // Storage invariant: the log numbers records as the buffer did.
                assert_eq!(written, lsns, "the log gave the batch other LSNs than the buffer");
                if let Some(on_batch) = &options.on_batch {
                    on_batch(&BatchReport { records, bytes, sync_duration });
                }
                shared.watermark.advance(written.end - 1);
            }
            Err(error) => {
                let error = CommitError(Arc::from(error.to_string()));
                tracing::error!(error = %error.0, "write-ahead log stopped; nothing more will be acknowledged");
                {
                    let mut inbox = lock(shared);
                    inbox.failed = true;
                    inbox.buffer.clear();
                }
                shared.watermark.fail(error.0.clone());
                if let Some(on_failure) = options.on_failure.take() {
                    on_failure(&error);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{channel, Receiver, Sender};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::wal::log_tests::{salts, SEGMENT_BYTES};
    use crate::wal::storage::{SimStorage, SyncGate};
    use crate::wal::watermark::Listener;

    /// Reports every advance of the watermark on a channel.
    struct Advances(Mutex<Sender<u64>>);

    impl Listener for Advances {
        fn advanced(&self, durable_lsn: u64) {
            let _ = crate::sync::lock(&self.0).send(durable_lsn);
        }
    }

    fn watermark() -> (Arc<Watermark>, Receiver<u64>) {
        let (tx, rx) = channel();
        let watermark = Arc::new(Watermark::default());
        watermark.listen(Arc::new(Advances(Mutex::new(tx))));
        (watermark, rx)
    }

    /// A log with its first segment already created, so the only syncs left are
    /// the batches' own.
    fn started_log(storage: &SimStorage) -> Log<SimStorage> {
        let (mut log, _) = Log::open(storage.clone(), SEGMENT_BYTES, salts()).unwrap();
        log.append(&[b"first"]).unwrap();
        log
    }

    #[test]
    fn the_watermark_passes_a_record_only_after_its_sync_and_later_records_share_one() {
        let storage = SimStorage::default();
        let log = started_log(&storage);
        let (entered_tx, entered) = channel();
        let (open, open_rx) = channel();
        storage.disk().sync_gate = Some(SyncGate { entered: entered_tx, open: Arc::new(Mutex::new(open_rx)) });
        let (watermark, advances) = watermark();
        let committer = Committer::start_with(log, CommitterOptions::default(), watermark.clone()).unwrap();
        assert_eq!(advances.recv().unwrap(), 1, "starts at what the log holds");

        assert_eq!(committer.append(b"a".to_vec()), 2);
        entered.recv().unwrap(); // written; its sync has begun and is held open
        assert_eq!(watermark.durable_lsn(), 1, "advanced before its sync returned");

        // Arriving during that sync, b and c wait for the next one, together.
        assert_eq!(committer.append(b"b".to_vec()), 3);
        assert_eq!(committer.append(b"c".to_vec()), 4);
        assert_eq!(committer.last_appended_lsn(), 4);
        open.send(()).unwrap();
        assert_eq!(advances.recv().unwrap(), 2);
        entered.recv().unwrap();
        assert_eq!(watermark.durable_lsn(), 2);
        open.send(()).unwrap();
        assert_eq!(advances.recv().unwrap(), 4, "b and c are durable together");
        assert!(entered.try_recv().is_err(), "b and c shared one sync");
        storage.disk().sync_gate = None;
        committer.stop();

        storage.disk().crash(|_, _| false);
        let (_, recovered) = Log::open(storage.clone(), SEGMENT_BYTES, salts()).unwrap();
        let payloads: Vec<&[u8]> = recovered.records.iter().map(|(_, p)| p.as_slice()).collect();
        assert_eq!(payloads, [&b"first"[..], b"a", b"b", b"c"]);
    }

    #[test]
    fn a_failed_sync_fails_the_watermark_which_never_passes_its_records() {
        let storage = SimStorage::default();
        let log = started_log(&storage);
        storage.disk().syncs_until_failure = Some(0);
        let (watermark, advances) = watermark();
        let (failed_tx, failed) = channel();
        let on_failure: FailureHook = Box::new(move |error| failed_tx.send(error.clone()).unwrap());
        let options = CommitterOptions { on_failure: Some(on_failure), ..CommitterOptions::default() };
        let committer = Committer::start_with(log, options, watermark.clone()).unwrap();
        assert_eq!(advances.recv().unwrap(), 1);
        committer.append(b"a".to_vec());
        failed.recv().unwrap();
        assert_eq!(advances.recv().unwrap(), 1, "listeners are told of the failure");
        assert!(watermark.failed().is_some());
        assert_eq!(watermark.durable_lsn(), 1, "fail-stop: the record of the failed sync is never durable");
        assert!(watermark.settled(2), "replies waiting for it may leave (as storage_failed)");
        committer.append(b"b".to_vec());
        committer.stop();
        assert_eq!(watermark.durable_lsn(), 1, "nothing after a failed sync is written");
    }

    /// Interval mode restarted the linger for the records a full batch left
    /// behind, so each batch of 4,096 waited one more interval: under load the
    /// log fell behind by an interval per 4,096 records. Records left over now
    /// go at once; only the first batch lingers. (Shown with a 2 s linger: the
    /// old code took another 2 s per batch; the bound below is half of it.)
    #[test]
    fn interval_mode_lingers_once_not_once_per_batch_under_load() {
        let storage = SimStorage::default();
        let (tx, advances) = channel();
        let watermark = Arc::new(Watermark::default());
        struct Timed(Mutex<Sender<(u64, std::time::Instant)>>);
        impl Listener for Timed {
            fn advanced(&self, durable_lsn: u64) {
                let _ = crate::sync::lock(&self.0).send((durable_lsn, std::time::Instant::now()));
            }
        }
        watermark.listen(Arc::new(Timed(Mutex::new(tx))));
        let linger = std::time::Duration::from_secs(2);
        let options = CommitterOptions { linger, ..CommitterOptions::default() };
        // Segments large enough for three full batches of small records.
        let (mut log, _) = Log::open(storage.clone(), 8 << 20, salts()).unwrap();
        log.append(&[b"first"]).unwrap();
        let committer = Committer::start_with(log, options, watermark.clone()).unwrap();
        assert_eq!(advances.recv().unwrap().0, 1);
        let count = 2 * BATCH_RECORDS_MAX as u64 + 1; // three batches
        for _ in 0..count {
            committer.append(b"r".to_vec());
        }
        let (first, first_at) = advances.recv().unwrap();
        assert_eq!(first, 1 + BATCH_RECORDS_MAX as u64, "the first batch is one full batch");
        let (last, last_at) = loop {
            let (lsn, at) = advances.recv().unwrap();
            if lsn == 1 + count {
                break (lsn, at);
            }
        };
        assert_eq!(last, 1 + count);
        let after_first = last_at - first_at;
        assert!(after_first < linger / 2, "the batches left over waited {after_first:?} more (linger {linger:?})");
        committer.stop();
    }

    #[test]
    fn stop_writes_what_is_queued() {
        let storage = SimStorage::default();
        let (watermark, _advances) = watermark();
        let committer =
            Committer::start_with(started_log(&storage), CommitterOptions::default(), watermark.clone()).unwrap();
        for i in 0..100u64 {
            assert_eq!(committer.append(format!("r{i}").into_bytes()), i + 2);
        }
        committer.stop();
        assert_eq!(watermark.durable_lsn(), 101);
    }

    #[test]
    fn a_buffer_takes_whole_batches_in_order_and_numbers_them_by_position() {
        let mut buffer = LogBuffer::new(7);
        assert_eq!(buffer.last_lsn(), 6);
        for i in 0..(BATCH_RECORDS_MAX + 3) {
            assert_eq!(buffer.append(vec![0; 8]), 7 + i as u64);
        }
        let mut batch = Vec::new();
        assert_eq!(buffer.take_batch(&mut batch), 7..7 + BATCH_RECORDS_MAX as u64);
        assert_eq!(batch.len(), BATCH_RECORDS_MAX);
        batch.clear();
        let last = 7 + BATCH_RECORDS_MAX as u64;
        assert_eq!(buffer.take_batch(&mut batch), last..last + 3);
        assert!(buffer.is_empty());
        // One record larger than a batch's body still goes, alone.
        buffer.append(vec![0; BATCH_BODY_BYTES_MAX]);
        buffer.append(vec![0; 8]);
        batch.clear();
        assert_eq!(buffer.take_batch(&mut batch).count(), 1);
    }
}
