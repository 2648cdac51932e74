//! Tiered payload storage: a memory budget for payload bytes (`--memory-limit`).
//!
//! Past the budget, the checkpointer drops from memory the payloads of tasks
//! whose payload rows are already flushed to RocksDB (newest first: in the
//! usual FIFO order they are delivered last). Those payloads are "cold": the
//! engine keeps the task, and the payload is read back from the store when the
//! task is leased or looked up. Nothing else changes: a cold task is
//! scheduled, retried and checkpointed like any other.
//!
//! **Cold reads happen off the engine lock** (issue 15, item 9: one slow disk
//! read under the lock stalled every client). Under the lock, a worker only
//! notes which payloads of a reply are cold and takes a [`PurgeFence`] ticket;
//! the reply goes to the cold-reader thread (`tqx-cold-read`), which reads the
//! payloads from RocksDB, fills them in and sends the reply with the LSN it
//! was given under the lock, so it still waits for the durable watermark in
//! its reactor's outbox (`outbox.rs`) like any other.
//!
//! **Cold copies are bounded server-wide.** A payload read back is a fresh
//! copy per reply (unlike a resident one, which replies share), and a reply
//! can wait unencoded for a client that does not read (`binary_conn.rs`). Every
//! copy is charged to [`ColdBytes`] until the reply drops it (once encoded,
//! or with its connection), and the cold-reader thread starts a reply only
//! while less than [`COLD_READ_BYTES_MAX`] is charged: past it, cold reads wait
//! for clients to read (the request deadline closes those that never do), and
//! memory stays at the bound plus one reply. Reads under the engine lock (the
//! fallbacks below) are charged but never wait.
//!
//! **Why the row is still there.** A payload row is deleted only by a
//! checkpoint's write batch, for a task purged before that checkpoint took its
//! changes (under the engine lock). A reader registers under the engine lock
//! while the task is live and its payload cold (so its row was flushed before
//! the payload left memory). A checkpoint whose changes were taken *after* the
//! registration may delete the row, so it waits, before writing, for every
//! reader registered before its changes were taken ([`PurgeFence::advance`],
//! [`Drain::wait`]); one taken *before* cannot hold the row's deletion, as the
//! task was live after it. Ids are never reused.

use std::fs::File;
use std::io::Read as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::liveness::Liveness;
use super::outbox::ReplyTo;
use crate::command::Reply;
use crate::engine::{Engine, TaskId};
use crate::limits::COLD_READ_BYTES_MAX;
use crate::store::Store;

/// `--memory-limit` default: payload bytes kept in memory (this machine kind
/// has 24 GiB; the rest is left for indexes, connections and the page cache).
pub const MEMORY_LIMIT_BYTES_DEFAULT: u64 = 4 << 30;
/// Eviction frees down to this share of the budget, so that it does not run
/// again after every few enqueues.
const EVICT_TO_PERCENT: u64 = 90;
/// Replies waiting for the cold-reader thread. Past it a worker reads the
/// payloads itself, under the engine lock (the old behaviour): a bound on what
/// is held for a disk that cannot keep up, at the cost of everyone's latency
/// while it lasts. An entry is a reply whose payloads are not read yet (a few
/// hundred bytes), so the queue holds a few MiB at most.
const COLD_READS_QUEUED_MAX: usize = 4_096;
/// How often a waiting checkpoint looks at the readers it waits for.
const DRAIN_POLL: Duration = Duration::from_millis(1);

/// Parses `4GiB`, `512MiB`, `64KiB` or a plain number of bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" | "K" => 10,
        "MiB" | "M" => 20,
        "GiB" | "G" => 30,
        "TiB" | "T" => 40,
        other => return Err(format!("unknown unit {other:?} (use B, KiB, MiB, GiB or TiB)")),
    };
    let n: u64 = digits.parse().map_err(|_| format!("expected a number of bytes like 4GiB, got {s:?}"))?;
    n.checked_mul(1 << shift).filter(|&b| b > 0).ok_or_else(|| format!("{s:?} is out of range"))
}

/// The budget and where cold payloads live.
pub(crate) struct Tiering {
    pub(crate) store: Arc<Store>,
    pub(crate) budget_bytes: u64,
    /// Keeps payload rows that readers are about to read from being deleted.
    pub(crate) fence: Arc<PurgeFence>,
    /// The cold-reader thread's queue, once started (`start_reader`); until
    /// then payloads are read in place.
    reads: Option<SyncSender<ColdRead>>,
    /// Cold payload copies held by replies (see the module comment).
    cold: Arc<ColdBytes>,
    /// Joined when the tiering is dropped: the thread holds the store, whose
    /// last owner must close it before the process exits (RocksDB closing on a
    /// thread while `exit` runs its static destructors aborts the process).
    reader: Option<JoinHandle<()>>,
}

impl Drop for Tiering {
    fn drop(&mut self) {
        self.reads = None; // the reader drains what is queued, then ends
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// A reply whose cold payloads are still to be read.
struct ColdRead {
    reply: Reply,
    to: ReplyTo,
    /// The newest state the reply shows (`ReplyTo::send`).
    lsn: u64,
    /// Which of the reply's tasks are cold (`Reply::Task`: `[0]`).
    cold: Vec<usize>,
    /// Held until the payloads are read.
    ticket: Ticket,
}

/// Orders cold reads before the deletion of the rows they read (see the module
/// comment): readers register under the engine lock in the current epoch; a
/// checkpoint flips the epoch under the lock when it takes its changes, then
/// waits for the previous epoch's readers before it writes. Two epochs suffice
/// because a checkpoint drains before the next one flips (one checkpointer).
#[derive(Default)]
pub(crate) struct PurgeFence {
    epoch: AtomicUsize,
    readers: [AtomicU64; 2],
}

/// A reader's registration; dropping it ends the read.
struct Ticket {
    fence: Arc<PurgeFence>,
    epoch: usize,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.fence.readers[self.epoch].fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a checkpoint waits for before writing (from [`PurgeFence::advance`]).
pub(crate) struct Drain {
    fence: Arc<PurgeFence>,
    epoch: usize,
}

impl PurgeFence {
    /// Under the engine lock.
    fn enter(self: &Arc<Self>) -> Ticket {
        let epoch = self.epoch.load(Ordering::SeqCst);
        self.readers[epoch].fetch_add(1, Ordering::SeqCst);
        Ticket { fence: self.clone(), epoch }
    }

    /// Under the engine lock, when a checkpoint takes its changes: later
    /// readers go to the other epoch; the returned drain waits for this one's.
    pub(crate) fn advance(self: &Arc<Self>) -> Drain {
        let epoch = self.epoch.load(Ordering::SeqCst);
        self.epoch.store(1 - epoch, Ordering::SeqCst);
        Drain { fence: self.clone(), epoch }
    }
}

impl Drain {
    /// Off the lock, before the checkpoint writes: returns once every reader
    /// registered before the flip has read its payloads.
    pub(crate) fn wait(self) {
        while self.fence.readers[self.epoch].load(Ordering::SeqCst) != 0 {
            std::thread::sleep(DRAIN_POLL);
        }
    }
}

impl Tiering {
    pub(crate) fn new(store: Arc<Store>, budget_bytes: u64) -> Tiering {
        let cold = Arc::new(ColdBytes { held: Mutex::new(0), freed: Condvar::new(), max: COLD_READ_BYTES_MAX });
        Tiering { store, budget_bytes, fence: Arc::default(), reads: None, cold, reader: None }
    }

    /// Starts the cold-reader thread. `gate`: the test hook
    /// `--debug-cold-read-gate FIFO` (each cold read first reads a byte from it,
    /// so a test can hold a read open and see what waits for it).
    pub(crate) fn start_reader(&mut self, gate: Option<&Path>, liveness: Arc<Liveness>) -> std::io::Result<()> {
        let gate = gate.map(File::open).transpose()?;
        let (sender, receiver) = std::sync::mpsc::sync_channel(COLD_READS_QUEUED_MAX);
        let store = self.store.clone();
        let cold = self.cold.clone();
        let reader = std::thread::Builder::new()
            .name("tqx-cold-read".into())
            .spawn(move || read_cold(&store, &cold, receiver, gate, &liveness))?;
        self.reads = Some(sender);
        self.reader = Some(reader);
        Ok(())
    }

    /// Whether the payloads held in memory exceed the budget.
    pub(crate) fn over_budget(&self, engine: &Engine) -> bool {
        engine.resident_payload_bytes() > self.budget_bytes
    }

    /// Drops payloads of tasks below `checkpointed_below` (their rows are
    /// flushed) until the resident bytes are back under the budget's target.
    pub(crate) fn evict(&self, engine: &mut Engine, checkpointed_below: TaskId) {
        let resident = engine.resident_payload_bytes();
        let target = self.budget_bytes / 100 * EVICT_TO_PERCENT;
        if resident <= self.budget_bytes {
            return;
        }
        let (count, bytes) = engine.evict_payloads(checkpointed_below, resident - target);
        tracing::info!(count, bytes, resident_bytes = resident - bytes, "payloads moved to the store (memory limit)");
    }

    /// Sends `reply` to `to`; called under the engine lock. If the reply shows
    /// cold payloads, the cold-reader thread reads them and sends it, once
    /// the lock is long released (see the module comment).
    /// `lsn`: the newest state the reply shows (`ReplyTo::send`).
    pub(crate) fn send(&self, engine: &Engine, reply: Reply, to: ReplyTo, lsn: u64) {
        let cold = cold_positions(engine, &reply);
        if cold.is_empty() {
            to.send(reply, lsn);
            return;
        }
        let read = ColdRead { reply, to, lsn, cold, ticket: self.fence.enter() };
        let read = match &self.reads {
            Some(reads) => match reads.try_send(read) {
                Ok(()) => return,
                Err(TrySendError::Full(read) | TrySendError::Disconnected(read)) => read,
            },
            None => read,
        };
        // No reader thread, or it is this far behind: read here.
        let ColdRead { mut reply, to, lsn, cold, .. } = read;
        fill(&self.store, &self.cold, &mut reply, &cold, None);
        to.send(reply, lsn);
    }
}

/// Which tasks of `reply` have their payload in the store only.
fn cold_positions(engine: &Engine, reply: &Reply) -> Vec<usize> {
    match reply {
        Reply::Leased(tasks) => (0..tasks.len()).filter(|&i| engine.payload_is_cold(tasks[i].id)).collect(),
        Reply::Task(view) if engine.payload_is_cold(view.id) => vec![0],
        Reply::TaskPage(page) => (0..page.tasks.len()).filter(|&i| engine.payload_is_cold(page.tasks[i].id)).collect(),
        _ => Vec::new(),
    }
}

/// The cold-reader thread: reads each queued reply's payloads, then sends it.
/// Ends when the tiering (its sender) is dropped.
fn read_cold(
    store: &Store,
    budget: &Arc<ColdBytes>,
    reads: Receiver<ColdRead>,
    mut gate: Option<File>,
    liveness: &Arc<Liveness>,
) {
    let heartbeat = liveness.register_current();
    loop {
        heartbeat.idle();
        let Ok(ColdRead { mut reply, to, lsn, cold, ticket }) = reads.recv() else { return };
        heartbeat.beat();
        // Waiting for clients to read is not a stalled server: beat meanwhile.
        budget.wait_for_room(|| heartbeat.beat());
        fill(store, budget, &mut reply, &cold, gate.as_mut());
        drop(ticket); // read: the rows may go now
        to.send(reply, lsn);
    }
}

/// Reads the payloads of the tasks at `cold` in `reply`. A payload missing from
/// the store (which the checkpoint order and the fence rule out) or a read
/// error turns the reply into `storage_failed`; the task itself is unaffected.
fn fill(store: &Store, budget: &Arc<ColdBytes>, reply: &mut Reply, cold: &[usize], gate: Option<&mut File>) {
    if cold.is_empty() {
        return;
    }
    if let Some(gate) = gate {
        let mut byte = [0u8; 1];
        let _ = gate.read_exact(&mut byte);
    }
    let result = match reply {
        Reply::Leased(tasks) => cold
            .iter()
            .try_for_each(|&i| read_payload(store, tasks[i].id).map(|bytes| tasks[i].payload = budget.charge(bytes))),
        Reply::Task(view) => read_payload(store, view.id).map(|bytes| view.payload = budget.charge(bytes)),
        Reply::TaskPage(page) => cold.iter().try_for_each(|&i| {
            read_payload(store, page.tasks[i].id).map(|bytes| page.tasks[i].payload = budget.charge(bytes))
        }),
        _ => Ok(()),
    };
    if let Err(reason) = result {
        tracing::error!(%reason, "cannot read a cold payload");
        *reply = Reply::StorageFailed(Arc::from(reason));
    }
}

/// Cold payload bytes held by replies, server-wide (module comment).
struct ColdBytes {
    held: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

/// A charged copy: gives its bytes back to the budget when the last `Bytes`
/// sharing it is dropped.
struct Charged {
    bytes: bytes::Bytes,
    budget: Arc<ColdBytes>,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Charged {
    fn drop(&mut self) {
        let mut held = crate::sync::lock(&self.budget.held);
        *held -= self.bytes.len();
        self.budget.freed.notify_all();
    }
}

impl ColdBytes {
    /// Waits while the charged bytes are at the bound (`on_wait` runs every
    /// 100 ms meanwhile). One reply at a time starts past any room left, so a
    /// reply larger than the bound still goes, alone.
    fn wait_for_room(&self, on_wait: impl Fn()) {
        let mut held = crate::sync::lock(&self.held);
        while *held >= self.max {
            held = crate::sync::wait_timeout(&self.freed, held, Duration::from_millis(100));
            on_wait();
        }
    }

    fn charge(self: &Arc<Self>, bytes: bytes::Bytes) -> bytes::Bytes {
        *crate::sync::lock(&self.held) += bytes.len();
        bytes::Bytes::from_owner(Charged { bytes, budget: self.clone() })
    }
}

fn read_payload(store: &Store, id: TaskId) -> Result<bytes::Bytes, String> {
    match store.payload(id) {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => Err(format!("the payload of task {id} is neither in memory nor in the store")),
        Err(error) => Err(format!("reading the payload of task {id} from the store failed: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_waits_for_readers_registered_before_it_took_its_changes_only() {
        let fence = Arc::new(PurgeFence::default());
        let before = fence.enter();
        let drain = fence.advance();
        let after = fence.enter(); // registered after the changes were taken
        let waited = std::thread::spawn(move || drain.wait());
        std::thread::sleep(Duration::from_millis(30));
        assert!(!waited.is_finished(), "the drain must wait for the earlier reader");
        drop(before);
        waited.join().unwrap();
        // The next checkpoint waits for the later reader.
        let drain = fence.advance();
        let waited = std::thread::spawn(move || drain.wait());
        std::thread::sleep(Duration::from_millis(30));
        assert!(!waited.is_finished(), "the next drain must wait for the later reader");
        drop(after);
        waited.join().unwrap();
    }

    #[test]
    fn cold_copies_are_charged_until_dropped_and_reads_wait_at_the_bound() {
        let budget = Arc::new(ColdBytes { held: Mutex::new(0), freed: Condvar::new(), max: 10 });
        let first = budget.charge(bytes::Bytes::from(vec![1u8; 8]));
        let shared = first.clone();
        budget.wait_for_room(|| panic!("under the bound: no wait"));
        let second = budget.charge(bytes::Bytes::from(vec![2u8; 8]));
        assert_eq!(*crate::sync::lock(&budget.held), 16);
        let waiter = {
            let budget = budget.clone();
            std::thread::spawn(move || budget.wait_for_room(|| {}))
        };
        drop(first);
        assert_eq!(*crate::sync::lock(&budget.held), 16, "a clone still shares the first copy");
        drop(second);
        waiter.join().unwrap(); // returns once the charge is under the bound (8 < 10)
        assert_eq!(*crate::sync::lock(&budget.held), 8);
        drop(shared);
        assert_eq!(*crate::sync::lock(&budget.held), 0);
    }

    #[test]
    fn memory_limits_parse_with_binary_units_and_refuse_nonsense() {
        assert_eq!(parse_bytes("4GiB"), Ok(4 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        for bad in ["", "0", "GiB", "4 GB", "-1", "99999999999TiB", "1.5GiB"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} accepted");
        }
    }
}
