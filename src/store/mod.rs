//! The checkpoint store: RocksDB behind the write-ahead log (docs/durability.md).
//!
//! The WAL is the system of record. This store holds a *checkpoint*: the state the
//! background applier reached after applying every WAL record up to `applied_lsn`.
//! Recovery loads the checkpoint, then replays WAL records after `applied_lsn`; the
//! WAL below the LSN returned by [`Store::flush`] may be deleted. Cold payloads are
//! also read back from here one at a time ([`Store::payload`]) for tiered storage.
//!
//! # Protocol, and why it is correct
//!
//! - [`Store::write`] puts one increment (every changed row, the engine meta and
//!   `applied_lsn`) in **one** `WriteBatch`. A batch is applied atomically to the
//!   memtables of all column families, so no reader and no flush ever sees rows of an
//!   increment without its `applied_lsn`, or the reverse.
//! - RocksDB's own WAL is disabled on every write (`disable_wal(true)`): our WAL
//!   already holds every record, so a second log would double the write cost for
//!   nothing. Without it, unflushed memtables are lost on a crash, which is fine: the
//!   last flushed checkpoint plus our WAL rebuild them.
//! - `atomic_flush` is on. Without a RocksDB WAL, flushing column families one by one
//!   could persist the `tasks` rows of an increment but not its `meta` row (or the
//!   reverse) if the process died between the two; recovery would then replay from a
//!   wrong `applied_lsn`. With `atomic_flush`, every flush (ours, a background one
//!   when a memtable fills, the one at shutdown) persists all column families up to
//!   the same sequence number, so what survives a crash is always a whole prefix of
//!   the increments written.
//! - [`Store::flush`] reads the last written `applied_lsn` *before* asking for the
//!   flush: the flush covers everything written before it was requested, so that
//!   LSN is durable when the flush returns (reading it after could return an
//!   increment written during the flush, which the flush may not cover).
//!
//! *Invariant (caller): a checkpoint's `applied_lsn` is never above the WAL's durable
//! LSN.* RocksDB may persist any written increment at any moment (a full memtable
//! triggers a flush, and so does closing the store), so the checkpoint must never get
//! ahead of the log it summarizes.
//!
//! *Invariant: `applied_lsn` never goes backwards.* [`Store::write`] asserts it (in
//! release too): a checkpoint older than the one on disk would make recovery replay
//! records onto state that already includes them.
//!
//! *Fail-stop:* increments are deltas, so after one failed [`Store::write`] a later
//! successful one would persist a higher `applied_lsn` with the failed increment's
//! rows missing. Any error from `write` or `flush` therefore poisons the store: every
//! later `write` and `flush` fails with [`StoreError::Io`]. The caller stops, like on a
//! WAL sync failure; restarting recovers from the last flushed checkpoint and the WAL.
//!
//! # Key layout
//!
//! Four column families (RocksDB's `default` family exists but is never used):
//!
//! | family     | key                                   | value                                   |
//! |------------|---------------------------------------|-----------------------------------------|
//! | `meta`     | `applied_lsn`                         | `u64` little-endian (8 bytes)           |
//! | `meta`     | `engine`                              | the engine's meta bytes (opaque here)   |
//! | `meta`     | `layout_version`                      | `u32` little-endian, [`LAYOUT_VERSION`] |
//! | `queues`   | queue name, UTF-8 (1..=128 bytes)     | the queue row (opaque here)             |
//! | `tasks`    | task id, `u64` **big-endian**         | the task row (opaque here)              |
//! | `payloads` | task id, `u64` **big-endian**         | the payload bytes                       |
//!
//! Ids are big-endian in keys so that RocksDB's bytewise order is numeric order:
//! `load` returns tasks and payloads in ascending id order without sorting, and
//! tombstones of purged (old, low-id) tasks sit together at the start of the range.
//! Values are little-endian like the WAL. Every write carries `layout_version`; `open`
//! refuses a store written with another layout. A `meta` value of the wrong length, a
//! key of the wrong length or a queue name that is not UTF-8 is
//! [`StoreError::Corrupt`] naming the key: nothing read from disk is unwrapped.
//!
//! # Options, each set explicitly at its call site (see `db_options` and `cf_options`)
//!
//! | option | value | why |
//! |---|---|---|
//! | `create_if_missing` | true | first start creates the store |
//! | `create_missing_column_families` | true | a store from before a family was added still opens |
//! | `atomic_flush` | true | all families persist together (see above) |
//! | `paranoid_checks` | true | corruption found by RocksDB stops it rather than being skipped |
//! | `use_fsync` | false | `fdatasync` on SST files, as for our WAL: file data and size, not mtime |
//! | `max_background_jobs` | 2 | 2 cores: 1 flush + 1 compaction thread beside the server |
//! | `max_subcompactions` | 1 | no splitting of one compaction across threads on 2 cores |
//! | `db_write_buffer_size` | 128 MiB | cap on all memtables together (a limit on memory) |
//! | `keep_log_file_num` / `max_log_file_size` | 4 / 8 MiB | bound RocksDB's info `LOG` files on disk |
//! | `max_open_files` | 512 | descriptors are shared with client connections (`--max-connections`): bounded, so the server's reserve covers them |
//! | `write_buffer_size` | meta, queues 4 MiB; tasks 32 MiB; payloads 64 MiB | memtable per family, sized to its rows |
//! | `max_write_buffer_number` | 2 | one memtable filling while one flushes |
//! | compression | lz4 for tasks and payloads; none for meta and queues | only lz4 is compiled in; meta and queues are a few KiB |
//! | compact-on-deletion collector | tasks, payloads: window 4,096 entries, 2,048 deletes or ratio 0.5 | purged tasks leave runs of tombstones that `load` would otherwise scan |
//! | block cache | 32 MiB LRU, shared | bounds memory for cold payload reads |
//! | writes: `disable_wal` / `sync` / `no_slowdown` | true / false / false | our WAL is the record; durability comes from `flush`; a stalled write waits (back-pressure on the applier thread) |
//! | flush: `wait` | true | `flush` returns only once the SST files and the MANIFEST are synced |
//! | `load` reads | snapshot, iterate bounds, no cache fill, checksums verified, 2 MiB readahead | one consistent view of all families; no scan past the key range; a one-off scan does not evict cold payloads |
//!
//! Not set, because nothing relies on it: `avoid_flush_during_shutdown` (the crate
//! does not expose it; RocksDB's default, false, makes closing the store flush, which
//! only shortens the next replay: the caller deletes WAL only below what `flush`
//! returned).

use std::fmt;
use std::path::Path;
use std::sync::Mutex;

use bytes::Bytes;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, FlushOptions, IteratorMode,
    Options, ReadOptions, WriteBatch, WriteOptions, DB,
};

use crate::engine::limits::QUEUE_NAME_BYTES_MAX;
use crate::engine::{ChangeSink, PayloadRow};

#[cfg(test)]
mod tests;

/// The version of the key layout above; bump it when the layout changes.
pub const LAYOUT_VERSION: u32 = 1;

const CF_META: &str = "meta";
const CF_QUEUES: &str = "queues";
const CF_TASKS: &str = "tasks";
const CF_PAYLOADS: &str = "payloads";
const CF_ALL: [&str; 4] = [CF_META, CF_QUEUES, CF_TASKS, CF_PAYLOADS];

const KEY_APPLIED_LSN: &[u8] = b"applied_lsn";
const KEY_ENGINE: &[u8] = b"engine";
const KEY_LAYOUT_VERSION: &[u8] = b"layout_version";

const MIB: usize = 1 << 20;
/// SST files RocksDB keeps open at once (it closes others and reopens them as
/// needed). Part of the server's descriptor reserve (`FD_RESERVE_COUNT`).
const OPEN_FILES_MAX: i32 = 512;
/// Memtable of `meta` and of `queues`: a handful of small rows each.
const WRITE_BUFFER_BYTES_SMALL: usize = 4 * MIB;
/// Memtable of `tasks`: ~100-byte rows, so ~300k changed rows before a flush.
const WRITE_BUFFER_BYTES_TASKS: usize = 32 * MIB;
/// Memtable of `payloads`: payloads are up to 1 MiB, so room for bursts of large ones.
const WRITE_BUFFER_BYTES_PAYLOADS: usize = 64 * MIB;
/// All memtables together; reaching it triggers an (atomic) flush. Worst case with
/// two memtables per family is 2 × (4 + 4 + 32 + 64) MiB = 208 MiB, capped here.
const DB_WRITE_BUFFER_BYTES_MAX: usize = 128 * MIB;
/// One memtable filling while the previous one is flushed.
const WRITE_BUFFER_COUNT_MAX: i32 = 2;
/// 2 cores: RocksDB gives max(1, jobs / 4) = 1 to flushes and the rest to compactions.
const BACKGROUND_JOBS_MAX: i32 = 2;
/// Blocks of cold payloads (and index/filter blocks) kept in memory, all families.
const BLOCK_CACHE_BYTES: usize = 32 * MIB;
/// RocksDB's info `LOG` files: at most this many, each at most this size.
const INFO_LOG_FILE_COUNT_MAX: usize = 4;
const INFO_LOG_FILE_BYTES_MAX: usize = 8 * MIB;
/// Compact-on-deletion: an SST file is marked for compaction when any window of this
/// many consecutive entries holds at least `DELETION_TRIGGER_COUNT` tombstones, or
/// when tombstones are at least `DELETION_RATIO` of its entries.
const DELETION_WINDOW_ENTRIES: usize = 4096;
const DELETION_TRIGGER_COUNT: usize = 2048;
const DELETION_RATIO: f64 = 0.5;
/// Readahead for `load`'s sequential scans.
const LOAD_READAHEAD_BYTES: usize = 2 * MIB;

/// A task id as a key: big-endian, so bytewise order is numeric order.
const ID_KEY_BYTES: usize = 8;
/// Iterate bounds of `tasks` and `payloads`: every 8-byte key k satisfies
/// `[0; 8] <= k < [0xff; 9]` (a proper prefix sorts first).
const ID_KEY_LOWER: [u8; ID_KEY_BYTES] = [0; ID_KEY_BYTES];
const ID_KEY_UPPER: [u8; ID_KEY_BYTES + 1] = [0xff; ID_KEY_BYTES + 1];
/// Iterate bounds of `queues`: names are 1..=QUEUE_NAME_BYTES_MAX bytes, so every key
/// k satisfies `[0] <= k < [0xff; QUEUE_NAME_BYTES_MAX + 1]`. `write` asserts the
/// length, so no row can be written that `load` would not see.
const QUEUE_KEY_LOWER: [u8; 1] = [0];
const QUEUE_KEY_UPPER: [u8; QUEUE_NAME_BYTES_MAX + 1] = [0xff; QUEUE_NAME_BYTES_MAX + 1];

/// What went wrong. Neither kind is worth retrying: `Io` from `write` or `flush`
/// poisons the store (fail-stop, see the module docs), and `Corrupt` data stays corrupt.
#[derive(Debug)]
pub enum StoreError {
    /// The disk or RocksDB failed (open, read, write, flush), or the store is poisoned.
    Io(String),
    /// Data on disk we cannot understand; names the family and key.
    Corrupt(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io(what) => write!(f, "checkpoint store I/O error: {what}"),
            StoreError::Corrupt(what) => write!(f, "checkpoint store is corrupt: {what}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    /// RocksDB reports corruption it detects (bad block checksum, bad MANIFEST) with
    /// its own status; everything else is the disk or the library failing.
    fn rocksdb(operation: &str, error: rocksdb::Error) -> StoreError {
        match error.kind() {
            rocksdb::ErrorKind::Corruption => StoreError::Corrupt(format!("{operation}: {error}")),
            _ => StoreError::Io(format!("{operation}: {error}")),
        }
    }
}

/// The last checkpoint, as stored.
#[derive(Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub applied_lsn: u64,
    pub meta: Vec<u8>,
    pub queues: Vec<(String, Vec<u8>)>,
    /// Ascending task id.
    pub tasks: Vec<(u64, Vec<u8>)>,
    /// Ascending task id.
    pub payloads: Vec<(u64, Bytes)>,
}

/// One checkpoint increment: rows changed since the previous one (None = delete).
#[derive(Debug, Clone, Copy)]
pub struct CheckpointBatch<'a> {
    pub applied_lsn: u64,
    pub meta: &'a [u8],
    pub queues: &'a [(String, Option<Vec<u8>>)],
    pub tasks: &'a [(u64, Option<Vec<u8>>)],
    pub payloads: &'a [(u64, Option<Bytes>)],
}

/// One checkpoint increment being filled (see [`Store::rows`]). The engine
/// hands it rows under its lock, so taking a row costs one copy into a chunk
/// of plain memory and nothing else: no RocksDB call, no allocation per row,
/// no reallocation that copies what was already taken (RocksDB's write batch,
/// filled under the lock before, grew by doubling one string and
/// page-faulted as it grew: 200–400 ms of lock per million tasks, measured in
/// docs/durability.md). [`Store::write_rows`] moves the rows into a write
/// batch sized once, outside the lock, and gives the chunks back for the next
/// round, so a round as large as the last one touches no fresh page under the
/// lock. Large payloads, which the engine shares rather than copies, are only
/// referenced.
pub struct Rows<'a> {
    store: &'a Store,
    /// Encoded rows (`RowTag`, key, value), each wholly inside one chunk; a
    /// chunk is never reallocated.
    chunks: Vec<Vec<u8>>,
    shared: Vec<(u64, Bytes)>,
    task_rows: usize,
    queue_rows: usize,
    /// Rows put in `chunks` (each becomes one write batch entry).
    entries: usize,
}

/// What one encoded row in a [`Rows`] chunk is. The key follows: a queue
/// name as one length byte and its bytes, or a task id as 8 bytes big-endian
/// (the store's key); a put then has its value as a `u32` little-endian length
/// and the bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum RowTag {
    QueuePut = 1,
    QueueDelete,
    TaskPut,
    TaskDelete,
    PayloadPut,
    PayloadDelete,
}

impl RowTag {
    const ALL: [RowTag; 6] = [
        RowTag::QueuePut,
        RowTag::QueueDelete,
        RowTag::TaskPut,
        RowTag::TaskDelete,
        RowTag::PayloadPut,
        RowTag::PayloadDelete,
    ];

    fn is_put(self) -> bool {
        matches!(self, RowTag::QueuePut | RowTag::TaskPut | RowTag::PayloadPut)
    }
}

/// Bytes per chunk of [`Rows`]: large enough that the chunk list stays short
/// (a million task rows and 100-byte payloads fill ~190), small enough that the
/// last, partly filled one wastes little.
const ROW_CHUNK_BYTES: usize = MIB;
/// Chunks kept for the next round: 64 MiB, about 350,000 tasks with 100-byte
/// payloads; a larger round allocates the rest afresh. An idle round releases
/// them all ([`Store::release_spare_rows`]).
const SPARE_ROW_CHUNKS_MAX: usize = 64;
/// A write batch entry's bytes beyond its key and value: type, column family
/// id, two varint lengths (RocksDB's `WriteBatch` format).
const BATCH_ENTRY_OVERHEAD_BYTES_MAX: usize = 1 + 5 + 5 + 5;

impl Rows<'_> {
    /// Task rows (written or deleted) so far.
    pub fn task_rows(&self) -> usize {
        self.task_rows
    }

    /// Queue rows (written or deleted) so far.
    pub fn queue_rows(&self) -> usize {
        self.queue_rows
    }

    /// Appends one row: the room for it is found first, so that a row never
    /// spans two chunks.
    fn push(&mut self, tag: RowTag, key: &[u8], value: Option<&[u8]>) {
        assert_eq!(tag.is_put(), value.is_some(), "row {tag:?} with value {:?}", value.map(<[u8]>::len));
        let key_prefix = usize::from(matches!(tag, RowTag::QueuePut | RowTag::QueueDelete));
        let bytes = 1 + key_prefix + key.len() + value.map_or(0, |v| 4 + v.len());
        let fits = self.chunks.last().is_some_and(|chunk| chunk.capacity() - chunk.len() >= bytes);
        if !fits {
            let chunk = match self.store.spare_chunk() {
                Some(chunk) if chunk.capacity() >= bytes => chunk,
                _ => Vec::with_capacity(bytes.max(ROW_CHUNK_BYTES)),
            };
            self.chunks.push(chunk);
        }
        let chunk = self.chunks.last_mut().expect("a chunk with room was just ensured");
        let capacity = chunk.capacity();
        chunk.push(tag as u8);
        if key_prefix == 1 {
            chunk.push(u8::try_from(key.len()).expect("queue names are at most 128 bytes (asserted by the caller)"));
        }
        chunk.extend_from_slice(key);
        if let Some(value) = value {
            let len = u32::try_from(value.len()).expect("a row is far below 4 GiB (engine limits)");
            chunk.extend_from_slice(&len.to_le_bytes());
            chunk.extend_from_slice(value);
        }
        debug_assert_eq!(chunk.capacity(), capacity, "a row chunk was reallocated");
        self.entries += 1;
    }
}

impl ChangeSink for Rows<'_> {
    fn queue(&mut self, name: &str, row: Option<&[u8]>) {
        // A key outside load's iterate bounds would be written but never loaded.
        assert!(
            !name.is_empty() && name.len() <= QUEUE_NAME_BYTES_MAX,
            "queue name of {} bytes cannot be checkpointed (1..={QUEUE_NAME_BYTES_MAX})",
            name.len()
        );
        self.queue_rows += 1;
        let tag = if row.is_some() { RowTag::QueuePut } else { RowTag::QueueDelete };
        self.push(tag, name.as_bytes(), row);
    }

    fn task(&mut self, id: u64, row: Option<&[u8]>) {
        self.task_rows += 1;
        let tag = if row.is_some() { RowTag::TaskPut } else { RowTag::TaskDelete };
        self.push(tag, &id.to_be_bytes(), row);
    }

    fn payload(&mut self, id: u64, payload: Option<PayloadRow<'_>>) {
        match payload {
            Some(PayloadRow::Slice(bytes)) => self.push(RowTag::PayloadPut, &id.to_be_bytes(), Some(bytes)),
            Some(PayloadRow::Shared(bytes)) => self.shared.push((id, bytes.clone())),
            None => self.push(RowTag::PayloadDelete, &id.to_be_bytes(), None),
        }
    }
}

/// The rows of one chunk, decoded in order. The chunk was encoded by
/// [`Rows::push`] in this process, so a malformed one is a bug: it panics.
fn chunk_rows(mut chunk: &[u8]) -> impl Iterator<Item = (RowTag, &[u8], Option<&[u8]>)> {
    std::iter::from_fn(move || {
        let (&code, rest) = chunk.split_first()?;
        let tag = *RowTag::ALL.iter().find(|tag| **tag as u8 == code).expect("a row tag written by Rows::push");
        let (key, rest) = match tag {
            RowTag::QueuePut | RowTag::QueueDelete => {
                let (&len, rest) = rest.split_first().expect("a queue row's name length");
                rest.split_at(usize::from(len))
            }
            _ => rest.split_at(8),
        };
        let (value, rest) = if tag.is_put() {
            let (len, rest) = rest.split_at(4);
            let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
            let (value, rest) = rest.split_at(len);
            (Some(value), rest)
        } else {
            (None, rest)
        };
        chunk = rest;
        Some((tag, key, value))
    })
}

/// What `write` and `flush` share, under one lock: `write` holds it across the
/// RocksDB write so that the monotonicity check and the write are one step.
#[derive(Debug)]
struct WriteState {
    /// The `applied_lsn` of the last increment written (in a memtable at least).
    applied_lsn_last: Option<u64>,
    /// Set by the first failed `write` or `flush`; the store is fail-stop after it.
    failure: Option<String>,
    /// Fault injection (tests, `tqx serve --debug-fail-checkpoint-writes-after`):
    /// this many more `write_rows` succeed, then the next fails as a RocksDB
    /// write error would (and poisons the store).
    writes_until_failure: Option<u64>,
}

/// The RocksDB checkpoint store. `Send + Sync`; every call blocks on disk I/O, so it
/// runs on a background thread, never on a reactor.
pub struct Store {
    db: DB,
    state: Mutex<WriteState>,
    /// [`Rows`] chunks from the last round, emptied, for the next (only the
    /// checkpointer takes rows, so this lock is never contended).
    spare_chunks: Mutex<Vec<Vec<u8>>>,
}

// Store is shared with the background applier thread.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
};

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.db.path()).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens or creates the store in `dir` (creates the directory).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(format!("create {}: {e}", dir.display())))?;
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let families = CF_ALL.iter().map(|name| ColumnFamilyDescriptor::new(*name, cf_options(name, &cache)));
        let db = DB::open_cf_descriptors(&db_options(), dir, families)
            .map_err(|e| StoreError::rocksdb(&format!("open {}", dir.display()), e))?;
        let store = Store {
            db,
            state: Mutex::new(WriteState { applied_lsn_last: None, failure: None, writes_until_failure: None }),
            spare_chunks: Mutex::new(Vec::new()),
        };
        store.check_layout_version()?;
        let applied_lsn_last = store.applied_lsn()?;
        store.lock_state().applied_lsn_last = applied_lsn_last;
        Ok(store)
    }

    /// None if no checkpoint was ever written.
    ///
    /// Reads all families from one snapshot, so a concurrent `write` cannot mix two
    /// checkpoints. Startup only: it scans every row.
    pub fn load(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.load_with_payload_budget(u64::MAX)
    }

    /// Like [`Store::load`], but loads payloads only while their total stays
    /// within `payload_bytes_max`, lowest task ids first (in FIFO order they are
    /// delivered first); the tasks whose payloads are left out start cold
    /// (tiered storage: read back with [`Store::payload`] when needed).
    pub fn load_with_payload_budget(&self, payload_bytes_max: u64) -> Result<Option<Checkpoint>, StoreError> {
        let snapshot = self.db.snapshot();
        let get_meta = |key: &[u8]| {
            snapshot.get_cf(self.cf(CF_META)?, key).map_err(|e| StoreError::rocksdb(&meta_context(key), e))
        };
        let Some(applied_lsn_bytes) = get_meta(KEY_APPLIED_LSN)? else {
            // Every write puts `applied_lsn` and `engine` together.
            if get_meta(KEY_ENGINE)?.is_some() {
                return Err(StoreError::Corrupt(format!(
                    "{} is present without applied_lsn",
                    meta_context(KEY_ENGINE)
                )));
            }
            return Ok(None);
        };
        let applied_lsn = decode_applied_lsn(&applied_lsn_bytes)?;
        let meta = get_meta(KEY_ENGINE)?.ok_or_else(|| {
            StoreError::Corrupt(format!("{} is missing while applied_lsn is set", meta_context(KEY_ENGINE)))
        })?;

        let scan = |family: &'static str, lower: &[u8], upper: &[u8]| {
            let mut read = ReadOptions::default();
            read.set_snapshot(&snapshot);
            // Tight bounds: RocksDB stops at the bound instead of skipping tombstones
            // past the last live key.
            read.set_iterate_lower_bound(lower);
            read.set_iterate_upper_bound(upper);
            // A one-off scan of everything must not evict the cold payloads cached for dequeues.
            read.fill_cache(false);
            read.set_verify_checksums(true);
            read.set_readahead_size(LOAD_READAHEAD_BYTES);
            let cf = self.cf(family)?;
            Ok::<_, StoreError>(
                self.db
                    .iterator_cf_opt(cf, read, IteratorMode::Start)
                    .map(move |item| item.map_err(|e| StoreError::rocksdb(&format!("scan column family {family}"), e))),
            )
        };

        let mut queues = Vec::new();
        for item in scan(CF_QUEUES, &QUEUE_KEY_LOWER, &QUEUE_KEY_UPPER)? {
            let (key, value) = item?;
            let name = String::from_utf8(key.into_vec()).map_err(|e| {
                StoreError::Corrupt(format!("column family queues: key {} is not UTF-8", hex(e.as_bytes())))
            })?;
            queues.push((name, value.into_vec()));
        }
        let mut tasks = Vec::new();
        for item in scan(CF_TASKS, &ID_KEY_LOWER, &ID_KEY_UPPER)? {
            let (key, value) = item?;
            tasks.push((decode_id(CF_TASKS, &key)?, value.into_vec()));
        }
        let mut payloads = Vec::new();
        let mut payload_bytes = 0u64;
        for item in scan(CF_PAYLOADS, &ID_KEY_LOWER, &ID_KEY_UPPER)? {
            let (key, value) = item?;
            payload_bytes += value.len() as u64;
            if payload_bytes > payload_bytes_max {
                break;
            }
            payloads.push((decode_id(CF_PAYLOADS, &key)?, Bytes::from(value)));
        }
        Ok(Some(Checkpoint { applied_lsn, meta, queues, tasks, payloads }))
    }

    /// The applied LSN of the last written checkpoint, if any (cheap: one get).
    ///
    /// "Written" is not "durable": [`Store::flush`] returns the durable one. After a
    /// restart the two are the same.
    pub fn applied_lsn(&self) -> Result<Option<u64>, StoreError> {
        let bytes = self
            .db
            .get_cf(self.cf(CF_META)?, KEY_APPLIED_LSN)
            .map_err(|e| StoreError::rocksdb(&meta_context(KEY_APPLIED_LSN), e))?;
        bytes.map(|b| decode_applied_lsn(&b)).transpose()
    }

    /// Writes the whole increment, meta and applied_lsn in ONE WriteBatch with
    /// RocksDB's own WAL disabled (our WAL is the system of record). Asserts (in
    /// release too) that applied_lsn does not go backwards.
    pub fn write(&self, batch: &CheckpointBatch<'_>) -> Result<(), StoreError> {
        let mut rows = self.rows()?;
        for (name, row) in batch.queues {
            rows.queue(name, row.as_deref());
        }
        for (id, row) in batch.tasks {
            rows.task(*id, row.as_deref());
        }
        for (id, payload) in batch.payloads {
            rows.payload(*id, payload.as_ref().map(PayloadRow::Shared));
        }
        self.write_rows(rows, batch.applied_lsn, batch.meta)
    }

    /// An empty increment, to be filled through [`ChangeSink`] (by
    /// `Engine::take_changes_into`, which copies each row into it once) and
    /// written with [`Store::write_rows`].
    pub fn rows(&self) -> Result<Rows<'_>, StoreError> {
        // The families are looked up here, before anything is taken from the
        // engine, so that `write_rows` cannot fail for want of one after.
        for family in CF_ALL {
            self.cf(family)?;
        }
        Ok(Rows { store: self, chunks: Vec::new(), shared: Vec::new(), task_rows: 0, queue_rows: 0, entries: 0 })
    }

    /// Frees the chunks kept from the last round for the next one (a round
    /// that found nothing to take: the server went idle).
    pub fn release_spare_rows(&self) {
        *crate::sync::lock(&self.spare_chunks) = Vec::new();
    }

    fn spare_chunk(&self) -> Option<Vec<u8>> {
        crate::sync::lock(&self.spare_chunks).pop()
    }

    /// Fault injection for tests: after `writes` more successful
    /// [`Store::write_rows`], the next fails like a RocksDB write error and
    /// poisons the store.
    pub fn fail_writes_after(&self, writes: u64) {
        self.lock_state().writes_until_failure = Some(writes);
    }

    /// Writes `rows` with `meta` and `applied_lsn`, as [`Store::write`] does.
    pub fn write_rows(&self, rows: Rows<'_>, applied_lsn: u64, meta: &[u8]) -> Result<(), StoreError> {
        let mut state = self.lock_state();
        if let Some(failure) = &state.failure {
            return Err(poisoned(failure));
        }
        match state.writes_until_failure {
            Some(0) => {
                let error = StoreError::Io(format!("write checkpoint at applied_lsn {applied_lsn}: injected failure"));
                state.failure = Some(error.to_string());
                return Err(error);
            }
            Some(left) => state.writes_until_failure = Some(left - 1),
            None => {}
        }
        if let Some(last) = state.applied_lsn_last {
            assert!(
                applied_lsn >= last,
                "checkpoint applied_lsn went backwards: {last} was written, then {applied_lsn}"
            );
        }
        let meta_cf = self.cf(CF_META)?;
        let (queues, tasks, payloads) = (self.cf(CF_QUEUES)?, self.cf(CF_TASKS)?, self.cf(CF_PAYLOADS)?);
        let Rows { chunks, shared, entries, .. } = rows;
        // Sized once: filling it never reallocates (module docs of `Rows`).
        let capacity = chunks.iter().map(Vec::len).sum::<usize>()
            + shared.iter().map(|(_, payload)| 8 + payload.len()).sum::<usize>()
            + (entries + shared.len() + 3) * BATCH_ENTRY_OVERHEAD_BYTES_MAX
            + meta.len()
            + 64;
        let mut batch = WriteBatch::with_capacity_bytes(capacity);
        let mut spare = Vec::with_capacity(chunks.len().min(SPARE_ROW_CHUNKS_MAX));
        for mut chunk in chunks {
            for (tag, key, value) in chunk_rows(&chunk) {
                let family = match tag {
                    RowTag::QueuePut | RowTag::QueueDelete => queues,
                    RowTag::TaskPut | RowTag::TaskDelete => tasks,
                    RowTag::PayloadPut | RowTag::PayloadDelete => payloads,
                };
                match value {
                    Some(value) => batch.put_cf(family, key, value),
                    None => batch.delete_cf(family, key),
                }
            }
            if spare.len() < SPARE_ROW_CHUNKS_MAX && chunk.capacity() == ROW_CHUNK_BYTES {
                chunk.clear();
                spare.push(chunk);
            }
        }
        // Kept for the next round: as many chunks as this one used, up to the cap.
        *crate::sync::lock(&self.spare_chunks) = spare;
        for (id, payload) in &shared {
            batch.put_cf(payloads, id.to_be_bytes(), payload);
        }
        drop(shared);
        batch.put_cf(meta_cf, KEY_ENGINE, meta);
        batch.put_cf(meta_cf, KEY_LAYOUT_VERSION, LAYOUT_VERSION.to_le_bytes());
        batch.put_cf(meta_cf, KEY_APPLIED_LSN, applied_lsn.to_le_bytes());

        let mut options = WriteOptions::default();
        // Our WAL holds every record; RocksDB's would double the writes (module docs).
        options.disable_wal(true);
        // Nothing to sync without a WAL: durability comes from `flush`.
        options.set_sync(false);
        // Stall (back-pressure on the applier thread) rather than fail when flushes lag.
        options.set_no_slowdown(false);
        match self.db.write_opt(batch, &options) {
            Ok(()) => {
                state.applied_lsn_last = Some(applied_lsn);
                Ok(())
            }
            Err(e) => {
                let error = StoreError::rocksdb(&format!("write checkpoint at applied_lsn {applied_lsn}"), e);
                state.failure = Some(error.to_string());
                Err(error)
            }
        }
    }

    /// Flushes memtables of all column families atomically and waits; after it
    /// returns, everything written so far survives a crash/power loss. Returns the
    /// applied LSN that is now durable in RocksDB (the WAL below it may be deleted by
    /// the caller); 0 if no checkpoint was ever written (LSNs start at 1).
    pub fn flush(&self) -> Result<u64, StoreError> {
        // Read before the flush is requested: the flush covers every write that
        // returned before that (module docs). The lock is not held during the flush,
        // so `write` is not blocked behind it.
        let applied_lsn = {
            let state = self.lock_state();
            if let Some(failure) = &state.failure {
                return Err(poisoned(failure));
            }
            state.applied_lsn_last.unwrap_or(0)
        };
        let families = [self.cf(CF_META)?, self.cf(CF_QUEUES)?, self.cf(CF_TASKS)?, self.cf(CF_PAYLOADS)?];
        let mut options = FlushOptions::default();
        // Return only once the SST files and the MANIFEST naming them are synced.
        options.set_wait(true);
        match self.db.flush_cfs_opt(&families, &options) {
            Ok(()) => Ok(applied_lsn),
            Err(e) => {
                let error = StoreError::rocksdb(&format!("flush checkpoint at applied_lsn {applied_lsn}"), e);
                self.lock_state().failure = Some(error.to_string());
                Err(error)
            }
        }
    }

    /// RocksDB's SST files and memtables, in bytes, over every column family
    /// (`rocksdb.total-sst-files-size`, `rocksdb.cur-size-all-mem-tables`);
    /// what cannot be read counts 0. Metadata only: no disk I/O. For
    /// `/metrics`, called by the checkpointer after each round.
    pub fn sizes(&self) -> (u64, u64) {
        let mut sst_bytes = 0;
        let mut memtable_bytes = 0;
        for name in CF_ALL {
            let Ok(family) = self.cf(name) else { continue };
            let property = |key: &str| self.db.property_int_value_cf(family, key).ok().flatten().unwrap_or(0);
            sst_bytes += property("rocksdb.total-sst-files-size");
            memtable_bytes += property("rocksdb.cur-size-all-mem-tables");
        }
        (sst_bytes, memtable_bytes)
    }

    /// One payload by task id (for tiered storage: payloads evicted from memory are
    /// read back on dequeue).
    pub fn payload(&self, id: u64) -> Result<Option<Bytes>, StoreError> {
        let payload = self
            .db
            .get_cf(self.cf(CF_PAYLOADS)?, id.to_be_bytes())
            .map_err(|e| StoreError::rocksdb(&format!("read payload of task {id}"), e))?;
        Ok(payload.map(Bytes::from))
    }

    /// Test only: writes a raw `meta` row (to plant garbage), bypassing every check.
    #[cfg(test)]
    pub(crate) fn put_meta_raw_for_test(&self, key: &[u8], value: &[u8]) {
        let mut options = WriteOptions::default();
        options.disable_wal(true);
        let meta = self.cf(CF_META).expect("meta column family");
        self.db.put_cf_opt(meta, key, value, &options).expect("raw meta write");
    }

    fn check_layout_version(&self) -> Result<(), StoreError> {
        let key = KEY_LAYOUT_VERSION;
        let Some(bytes) =
            self.db.get_cf(self.cf(CF_META)?, key).map_err(|e| StoreError::rocksdb(&meta_context(key), e))?
        else {
            // A store never written to (the first write sets it); `load` checks that
            // `applied_lsn` is absent too.
            return Ok(());
        };
        let version = u32::from_le_bytes(fixed_bytes(key, &bytes)?);
        if version != LAYOUT_VERSION {
            return Err(StoreError::Corrupt(format!(
                "{} is {version}; this build reads layout {LAYOUT_VERSION}",
                meta_context(key)
            )));
        }
        Ok(())
    }

    fn cf(&self, name: &str) -> Result<&ColumnFamily, StoreError> {
        // `open` opened every family in CF_ALL, so this only fails on a bug.
        self.db.cf_handle(name).ok_or_else(|| StoreError::Io(format!("column family {name} is not open")))
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, WriteState> {
        // A panic while holding it (the applied_lsn assertion in `write`) ends the
        // process; the lock is never reused after one (crate::sync).
        crate::sync::lock(&self.state)
    }
}

/// Database-wide options; each is set here, explicitly, because the design relies on
/// it (module docs, "Options").
fn db_options() -> Options {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    // Without RocksDB's WAL, only atomic flushes keep the families consistent on disk.
    options.set_atomic_flush(true);
    options.set_paranoid_checks(true);
    options.set_use_fsync(false);
    options.set_max_background_jobs(BACKGROUND_JOBS_MAX);
    options.set_max_subcompactions(1);
    options.set_db_write_buffer_size(DB_WRITE_BUFFER_BYTES_MAX);
    options.set_keep_log_file_num(INFO_LOG_FILE_COUNT_MAX);
    options.set_max_log_file_size(INFO_LOG_FILE_BYTES_MAX);
    options.set_max_open_files(OPEN_FILES_MAX);
    options
}

/// Options of one column family: memtable size and compression fit its rows.
fn cf_options(name: &str, cache: &Cache) -> Options {
    let mut options = Options::default();
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    options.set_block_based_table_factory(&table);
    options.set_max_write_buffer_number(WRITE_BUFFER_COUNT_MAX);
    let (write_buffer_bytes, compression, deletions_compact) = match name {
        // Tasks rows repeat field layouts and queue names; payloads are often JSON.
        // lz4 is cheap on both, and it is the only codec compiled in.
        CF_TASKS => (WRITE_BUFFER_BYTES_TASKS, DBCompressionType::Lz4, true),
        CF_PAYLOADS => (WRITE_BUFFER_BYTES_PAYLOADS, DBCompressionType::Lz4, true),
        // A few KiB in all: compression would save nothing.
        _ => (WRITE_BUFFER_BYTES_SMALL, DBCompressionType::None, false),
    };
    options.set_write_buffer_size(write_buffer_bytes);
    options.set_compression_type(compression);
    options.set_bottommost_compression_type(compression);
    if deletions_compact {
        // Purged tasks leave runs of tombstones (low ids, together); compacting the
        // files that hold them keeps `load` from scanning them on every start.
        options.add_compact_on_deletion_collector_factory(
            DELETION_WINDOW_ENTRIES,
            DELETION_TRIGGER_COUNT,
            DELETION_RATIO,
        );
    }
    options
}

fn decode_applied_lsn(bytes: &[u8]) -> Result<u64, StoreError> {
    Ok(u64::from_le_bytes(fixed_bytes(KEY_APPLIED_LSN, bytes)?))
}

fn decode_id(family: &str, key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; ID_KEY_BYTES] = key.try_into().map_err(|_| {
        StoreError::Corrupt(format!(
            "column family {family}: key {} is {} bytes, not a {ID_KEY_BYTES}-byte task id",
            hex(key),
            key.len()
        ))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// A `meta` value that must be exactly N bytes.
fn fixed_bytes<const N: usize>(key: &[u8], value: &[u8]) -> Result<[u8; N], StoreError> {
    value
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{} is {} bytes, expected {N}", meta_context(key), value.len())))
}

fn meta_context(key: &[u8]) -> String {
    format!("column family meta: key {}", String::from_utf8_lossy(key))
}

fn poisoned(failure: &str) -> StoreError {
    StoreError::Io(format!("an earlier write or flush failed, the store is fail-stop: {failure}"))
}

/// Keys in error messages: short keys in full, long ones cut.
fn hex(bytes: &[u8]) -> String {
    const SHOWN_BYTES_MAX: usize = 32;
    let mut text: String = bytes.iter().take(SHOWN_BYTES_MAX).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > SHOWN_BYTES_MAX {
        text.push('…');
    }
    text
}
