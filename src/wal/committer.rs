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

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::format::{BATCH_BODY_BYTES_MAX, RECORD_HEADER_BYTES};
use super::log::Log;
use super::storage::Storage;

/// Called once a record is durable (with its LSN) or can never be.
pub type Completion = Box<dyn FnOnce(Result<u64, CommitError>) + Send>;

/// The log stopped (fail-stop); the message says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitError(pub Arc<str>);

/// Records in one batch at most: bounds the latency the last of them adds.
const BATCH_RECORDS_MAX: usize = 4096;

#[derive(Default)]
struct Inbox {
    pending: Vec<(Vec<u8>, Completion)>,
    stopping: bool,
    failed: Option<CommitError>,
}

pub struct Committer {
    shared: Arc<(Mutex<Inbox>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

fn lock(shared: &(Mutex<Inbox>, Condvar)) -> std::sync::MutexGuard<'_, Inbox> {
    shared.0.lock().unwrap_or_else(|e| e.into_inner())
}

impl Committer {
    pub fn start<S>(log: Log<S>) -> std::io::Result<Committer>
    where
        S: Storage + Send + 'static,
        S::File: Send,
    {
        let shared = Arc::new((Mutex::new(Inbox::default()), Condvar::new()));
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new().name("tqx-wal".into()).spawn(move || run(log, &thread_shared))?;
        Ok(Committer { shared, thread: Some(thread) })
    }

    /// Queues `record`; `done` is called once it is durable, or with an error.
    pub fn submit(&self, record: Vec<u8>, done: Completion) {
        let mut inbox = lock(&self.shared);
        if let Some(error) = inbox.failed.clone() {
            drop(inbox);
            done(Err(error));
            return;
        }
        inbox.pending.push((record, done));
        drop(inbox);
        self.shared.1.notify_one();
    }

    /// Writes what is queued, then stops the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        lock(&self.shared).stopping = true;
        self.shared.1.notify_one();
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

fn run<S: Storage>(mut log: Log<S>, shared: &(Mutex<Inbox>, Condvar)) {
    let mut batch: Vec<(Vec<u8>, Completion)> = Vec::new();
    loop {
        {
            let mut inbox = lock(shared);
            while inbox.pending.is_empty() && !inbox.stopping {
                inbox = shared.1.wait(inbox).unwrap_or_else(|e| e.into_inner());
            }
            if inbox.pending.is_empty() {
                return;
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
        }
        let records: Vec<&[u8]> = batch.iter().map(|(record, _)| record.as_slice()).collect();
        match log.append(&records) {
            Ok(lsns) => {
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
