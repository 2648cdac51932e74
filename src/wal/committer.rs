//! Group commit: one thread owns the log; workers hand it records and are told
//! when each is durable.
//!
//! The thread waits for records, takes all that have arrived (up to a batch's
//! limits), writes them as one batch with one write and one `fdatasync`, and only
//! then calls each record's completion with its LSN. Records that arrive while a
//! sync is in flight wait for the next one, so under load many requests share a
//! sync, and alone a request waits about one sync.
//!
//! Fail-stop: if a write or sync fails, every record of that batch and every
//! record submitted afterwards completes with an error, and nothing is retried.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::format::{BATCH_BODY_BYTES_MAX, RECORD_HEADER_BYTES};
use super::log::Log;
use super::storage::Storage;

/// Called once a record is durable (with its LSN) or can never be.
pub type Completion = Box<dyn FnOnce(Result<u64, CommitError>) + Send>;

/// Called once when the log fails (see [`CommitterOptions::on_failure`]).
pub type FailureHook = Box<dyn FnOnce(&CommitError) + Send>;

/// The log stopped (fail-stop); the message says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitError(pub Arc<str>);

/// Records in one batch at most: bounds the latency the last of them adds.
const BATCH_RECORDS_MAX: usize = 4096;

struct Inbox {
    pending: Vec<(Vec<u8>, Completion)>,
    /// When the oldest of `pending` arrived (for the linger of interval mode).
    oldest_pending_at: Option<Instant>,
    /// LSN the next submitted record will get: records are written in
    /// submission order, so it is known at submission.
    next_lsn: u64,
    stopping: bool,
    failed: Option<CommitError>,
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
}

pub struct Committer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    inbox: Mutex<Inbox>,
    wake: Condvar,
    /// Every record with an LSN up to this one is durable.
    durable_lsn: AtomicU64,
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
        Committer::start_with(log, CommitterOptions::default())
    }

    pub fn start_with<S>(log: Log<S>, options: CommitterOptions) -> std::io::Result<Committer>
    where
        S: Storage + Send + 'static,
        S::File: Send,
    {
        let next_lsn = log.next_lsn();
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox {
                pending: Vec::new(),
                oldest_pending_at: None,
                next_lsn,
                stopping: false,
                failed: None,
                remove_through: None,
            }),
            wake: Condvar::new(),
            durable_lsn: AtomicU64::new(next_lsn - 1),
        });
        let thread_shared = shared.clone();
        let thread =
            std::thread::Builder::new().name("tqx-wal".into()).spawn(move || run(log, &thread_shared, options))?;
        Ok(Committer { shared, thread: Some(thread) })
    }

    /// Queues `record` and returns the LSN it will have; `done` is called once
    /// it is durable, or with an error (then the LSN is never used).
    pub fn submit(&self, record: Vec<u8>, done: Completion) -> u64 {
        let mut inbox = lock(&self.shared);
        if let Some(error) = inbox.failed.clone() {
            let lsn = inbox.next_lsn;
            drop(inbox);
            done(Err(error));
            return lsn;
        }
        let lsn = inbox.next_lsn;
        inbox.next_lsn += 1;
        let was_empty = inbox.pending.is_empty();
        if was_empty {
            inbox.oldest_pending_at = Some(Instant::now());
        }
        inbox.pending.push((record, done));
        drop(inbox);
        // The WAL thread sleeps only on an empty inbox (or lingers, in interval
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

    /// The LSN of the last record submitted so far (0 if none ever was).
    pub fn last_submitted_lsn(&self) -> u64 {
        lock(&self.shared).next_lsn - 1
    }

    /// Every record with an LSN up to this one is durable.
    pub fn durable_lsn(&self) -> u64 {
        self.shared.durable_lsn.load(Ordering::Acquire)
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
    let mut batch: Vec<(Vec<u8>, Completion)> = Vec::new();
    loop {
        {
            let mut inbox = lock(shared);
            while inbox.pending.is_empty() && !inbox.stopping && inbox.remove_through.is_none() {
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
            if inbox.pending.is_empty() {
                // Stopping with everything written and synced: mark the log
                // closed cleanly, so the next open takes no damage at its end
                // for a crash's tear. (A failed log stays unmarked.)
                if inbox.failed.is_none() {
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
            // Take records in arrival order while they fit one batch.
            let mut body_bytes = 0;
            let mut take = 0;
            for (record, _) in &inbox.pending {
                let record_bytes = (RECORD_HEADER_BYTES + record.len() + 7) & !7;
                if take == BATCH_RECORDS_MAX || (take > 0 && body_bytes + record_bytes > BATCH_BODY_BYTES_MAX) {
                    break;
                }
                body_bytes += record_bytes;
                take += 1;
            }
            batch.extend(inbox.pending.drain(..take));
            inbox.oldest_pending_at = (!inbox.pending.is_empty()).then(Instant::now);
        }
        let records: Vec<&[u8]> = batch.iter().map(|(record, _)| record.as_slice()).collect();
        match log.append(&records) {
            Ok(lsns) => {
                shared.durable_lsn.store(lsns.end - 1, Ordering::Release);
                for ((_, done), lsn) in batch.drain(..).zip(lsns) {
                    done(Ok(lsn));
                }
            }
            Err(error) => {
                let error = CommitError(Arc::from(error.to_string()));
                tracing::error!(error = %error.0, "write-ahead log stopped; nothing more will be acknowledged");
                let rest = {
                    let mut inbox = lock(shared);
                    inbox.failed = Some(error.clone());
                    std::mem::take(&mut inbox.pending)
                };
                for (_, done) in batch.drain(..).chain(rest) {
                    done(Err(error.clone()));
                }
                if let Some(on_failure) = options.on_failure.take() {
                    on_failure(&error);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{channel, Receiver};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::wal::log_tests::{salts, SEGMENT_BYTES};
    use crate::wal::storage::{SimStorage, SyncGate};

    fn completion() -> (Completion, Receiver<Result<u64, CommitError>>) {
        let (tx, rx) = channel();
        (
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
            rx,
        )
    }

    /// A log with its first segment already created, so the only syncs left are
    /// the batches' own.
    fn started_log(storage: &SimStorage) -> Log<SimStorage> {
        let (mut log, _) = Log::open(storage.clone(), SEGMENT_BYTES, salts()).unwrap();
        log.append(&[b"first"]).unwrap();
        log
    }

    #[test]
    fn a_reply_waits_for_the_sync_that_covers_its_record_and_later_records_share_one() {
        let storage = SimStorage::default();
        let log = started_log(&storage);
        let (entered_tx, entered) = channel();
        let (open, open_rx) = channel();
        storage.disk().sync_gate = Some(SyncGate { entered: entered_tx, open: Arc::new(Mutex::new(open_rx)) });
        let committer = Committer::start(log).unwrap();

        let (done, a) = completion();
        committer.submit(b"a".to_vec(), done);
        entered.recv().unwrap(); // written; its sync has begun and is held open
        assert!(a.try_recv().is_err(), "acknowledged before its sync returned");

        // Arriving during that sync, b and c wait for the next one, together.
        let (done, b) = completion();
        committer.submit(b"b".to_vec(), done);
        let (done, c) = completion();
        committer.submit(b"c".to_vec(), done);
        open.send(()).unwrap();
        assert_eq!(a.recv().unwrap(), Ok(2));
        entered.recv().unwrap();
        assert!(b.try_recv().is_err() && c.try_recv().is_err());
        open.send(()).unwrap();
        assert_eq!((b.recv().unwrap(), c.recv().unwrap()), (Ok(3), Ok(4)));
        assert!(entered.try_recv().is_err(), "b and c shared one sync");
        storage.disk().sync_gate = None;
        committer.stop();

        storage.disk().crash(|_, _| false);
        let (_, recovered) = Log::open(storage.clone(), SEGMENT_BYTES, salts()).unwrap();
        let payloads: Vec<&[u8]> = recovered.records.iter().map(|(_, p)| p.as_slice()).collect();
        assert_eq!(payloads, [&b"first"[..], b"a", b"b", b"c"]);
    }

    #[test]
    fn a_failed_sync_fails_its_records_and_everything_after() {
        let storage = SimStorage::default();
        let log = started_log(&storage);
        storage.disk().syncs_until_failure = Some(0);
        let committer = Committer::start(log).unwrap();
        let (done, a) = completion();
        committer.submit(b"a".to_vec(), done);
        assert!(a.recv().unwrap().is_err());
        let (done, b) = completion();
        committer.submit(b"b".to_vec(), done);
        assert!(b.recv().unwrap().is_err(), "fail-stop: nothing after a failed sync is acknowledged");
        committer.stop();
    }

    #[test]
    fn stop_writes_what_is_queued() {
        let storage = SimStorage::default();
        let committer = Committer::start(started_log(&storage)).unwrap();
        let receivers: Vec<_> = (0..100)
            .map(|i| {
                let (done, rx) = completion();
                committer.submit(format!("r{i}").into_bytes(), done);
                rx
            })
            .collect();
        committer.stop();
        for (i, rx) in receivers.into_iter().enumerate() {
            assert_eq!(rx.recv().unwrap(), Ok(i as u64 + 2));
        }
    }
}
