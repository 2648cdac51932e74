//! The checkpoint store against a real RocksDB in a fresh directory per test.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;

use super::{Checkpoint, CheckpointBatch, Store, StoreError, LAYOUT_VERSION};
use crate::engine::limits::QUEUE_NAME_BYTES_MAX;

/// A unique directory under the system temp dir, removed on drop (also when a test
/// panics, so `should_panic` tests clean up too). Declare it before the `Store` so
/// the store is closed first.
struct TestDir(PathBuf);

impl TestDir {
    fn new(test: &str) -> TestDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("tqx-store-{test}-{}-{nanos}", std::process::id()));
        assert!(!dir.exists(), "test dir {} already exists", dir.display());
        TestDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Rows of one increment, owned, so tests can build them and borrow a batch.
#[derive(Clone, Default)]
struct Rows {
    applied_lsn: u64,
    meta: Vec<u8>,
    queues: Vec<(String, Option<Vec<u8>>)>,
    tasks: Vec<(u64, Option<Vec<u8>>)>,
    payloads: Vec<(u64, Option<Bytes>)>,
}

impl Rows {
    fn batch(&self) -> CheckpointBatch<'_> {
        CheckpointBatch {
            applied_lsn: self.applied_lsn,
            meta: &self.meta,
            queues: &self.queues,
            tasks: &self.tasks,
            payloads: &self.payloads,
        }
    }
}

/// Ids chosen so that little-endian keys would sort them wrongly (2 < 256 but
/// 0x02.. > 0x00 0x01..), plus both ends of the key range the iterate bounds cover.
fn first_rows() -> Rows {
    let long_name = "q".repeat(QUEUE_NAME_BYTES_MAX);
    Rows {
        applied_lsn: 7,
        meta: b"engine meta v1".to_vec(),
        queues: vec![("emails".into(), Some(b"cfg-emails".to_vec())), (long_name, Some(b"cfg-long".to_vec()))],
        tasks: [256, 2, u64::MAX, 0, 1].iter().map(|&id| (id, Some(format!("task-{id}").into_bytes()))).collect(),
        payloads: [256, 2, u64::MAX, 0].iter().map(|&id| (id, Some(Bytes::from(format!("payload-{id}"))))).collect(),
    }
}

fn expected_first() -> Checkpoint {
    let rows = first_rows();
    let mut queues: Vec<_> = rows.queues.iter().map(|(name, row)| (name.clone(), row.clone().unwrap())).collect();
    queues.sort();
    let mut tasks: Vec<_> = rows.tasks.iter().map(|(id, row)| (*id, row.clone().unwrap())).collect();
    tasks.sort();
    let mut payloads: Vec<_> = rows.payloads.iter().map(|(id, p)| (*id, p.clone().unwrap())).collect();
    payloads.sort();
    Checkpoint { applied_lsn: rows.applied_lsn, meta: rows.meta, queues, tasks, payloads }
}

fn corrupt_message(result: Result<impl std::fmt::Debug, StoreError>) -> String {
    match result {
        Err(StoreError::Corrupt(message)) => message,
        other => panic!("expected StoreError::Corrupt, got {other:?}"),
    }
}

#[test]
fn an_empty_store_loads_none_and_flushes_to_lsn_zero() {
    let dir = TestDir::new("empty");
    let store = Store::open(dir.path()).unwrap();
    assert!(store.load().unwrap().is_none());
    assert_eq!(store.applied_lsn().unwrap(), None);
    assert_eq!(store.flush().unwrap(), 0);
    assert_eq!(store.payload(1).unwrap(), None);
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert!(store.load().unwrap().is_none());
}

#[test]
fn written_rows_load_back_in_id_order_before_and_after_reopen() {
    let dir = TestDir::new("roundtrip");
    let store = Store::open(dir.path()).unwrap();
    store.write(&first_rows().batch()).unwrap();
    assert_eq!(store.load().unwrap(), Some(expected_first()), "from the memtables");
    assert_eq!(store.applied_lsn().unwrap(), Some(7));
    assert_eq!(store.flush().unwrap(), 7);
    drop(store);

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.load().unwrap(), Some(expected_first()), "from the SST files");
    assert_eq!(store.applied_lsn().unwrap(), Some(7));
    assert_eq!(store.payload(256).unwrap(), Some(Bytes::from("payload-256")));
    assert_eq!(store.payload(1).unwrap(), None, "task 1 has no payload row");
}

#[test]
fn deletes_remove_rows_and_updates_replace_them() {
    let dir = TestDir::new("deletes");
    let store = Store::open(dir.path()).unwrap();
    store.write(&first_rows().batch()).unwrap();
    let second = Rows {
        applied_lsn: 9,
        meta: b"engine meta v2".to_vec(),
        queues: vec![("emails".into(), None), ("reports".into(), Some(b"cfg-reports".to_vec()))],
        tasks: vec![(2, None), (u64::MAX, None), (256, Some(b"task-256-leased".to_vec())), (3, None)],
        payloads: vec![(2, None), (u64::MAX, None)],
    };
    store.write(&second.batch()).unwrap();
    assert_eq!(store.flush().unwrap(), 9);
    drop(store);

    let store = Store::open(dir.path()).unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.applied_lsn, 9);
    assert_eq!(loaded.meta, b"engine meta v2");
    let queue_names: Vec<_> = loaded.queues.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(queue_names, ["q".repeat(QUEUE_NAME_BYTES_MAX).as_str(), "reports"]);
    let tasks: Vec<_> = loaded.tasks.iter().map(|(id, row)| (*id, row.as_slice())).collect();
    assert_eq!(tasks, [(0, &b"task-0"[..]), (1, b"task-1"), (256, b"task-256-leased")]);
    let payload_ids: Vec<_> = loaded.payloads.iter().map(|(id, _)| *id).collect();
    assert_eq!(payload_ids, [0, 256]);
    assert_eq!(store.payload(2).unwrap(), None);
}

#[test]
fn applied_lsn_may_stay_equal() {
    let dir = TestDir::new("lsn-equal");
    let store = Store::open(dir.path()).unwrap();
    store.write(&first_rows().batch()).unwrap();
    let same = Rows { applied_lsn: 7, meta: b"m".to_vec(), ..Rows::default() };
    store.write(&same.batch()).unwrap();
    assert_eq!(store.applied_lsn().unwrap(), Some(7));
}

#[test]
#[should_panic(expected = "checkpoint applied_lsn went backwards: 7 was written, then 6")]
fn applied_lsn_going_backwards_panics() {
    let dir = TestDir::new("lsn-backwards");
    let store = Store::open(dir.path()).unwrap();
    store.write(&first_rows().batch()).unwrap();
    let older = Rows { applied_lsn: 6, meta: b"m".to_vec(), ..Rows::default() };
    let _ = store.write(&older.batch());
}

#[test]
#[should_panic(expected = "checkpoint applied_lsn went backwards: 7 was written, then 6")]
fn applied_lsn_going_backwards_after_reopen_panics() {
    let dir = TestDir::new("lsn-backwards-reopen");
    let store = Store::open(dir.path()).unwrap();
    store.write(&first_rows().batch()).unwrap();
    store.flush().unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let older = Rows { applied_lsn: 6, meta: b"m".to_vec(), ..Rows::default() };
    let _ = store.write(&older.batch());
}

#[test]
#[should_panic(expected = "queue name of 129 bytes cannot be checkpointed")]
fn a_queue_name_longer_than_the_limit_is_refused_rather_than_lost() {
    let dir = TestDir::new("long-queue");
    let store = Store::open(dir.path()).unwrap();
    let rows = Rows {
        applied_lsn: 1,
        queues: vec![("q".repeat(QUEUE_NAME_BYTES_MAX + 1), Some(Vec::new()))],
        ..Rows::default()
    };
    let _ = store.write(&rows.batch());
}

#[test]
fn a_corrupt_applied_lsn_is_reported_as_corrupt_naming_the_key() {
    let dir = TestDir::new("corrupt-lsn");
    let store = Store::open(dir.path()).unwrap();
    store.write(&first_rows().batch()).unwrap();
    store.put_meta_raw_for_test(b"applied_lsn", b"garbage");
    for message in [corrupt_message(store.applied_lsn()), corrupt_message(store.load())] {
        assert!(message.contains("applied_lsn") && message.contains("7 bytes, expected 8"), "{message}");
    }
    store.flush().unwrap();
    drop(store);
    let message = corrupt_message(Store::open(dir.path()));
    assert!(message.contains("applied_lsn"), "{message}");
}

#[test]
fn a_layout_version_from_another_build_is_refused_at_open() {
    let dir = TestDir::new("layout");
    let store = Store::open(dir.path()).unwrap();
    store.write(&first_rows().batch()).unwrap();
    store.put_meta_raw_for_test(b"layout_version", &(LAYOUT_VERSION + 1).to_le_bytes());
    store.flush().unwrap();
    drop(store);
    let message = corrupt_message(Store::open(dir.path()));
    assert!(message.contains("layout_version") && message.contains("is 2"), "{message}");
}

#[test]
fn engine_meta_without_applied_lsn_is_corrupt() {
    let dir = TestDir::new("meta-without-lsn");
    let store = Store::open(dir.path()).unwrap();
    store.put_meta_raw_for_test(b"engine", b"orphan");
    let message = corrupt_message(store.load());
    assert!(message.contains("engine"), "{message}");
}

const CRASH_DIR_VAR: &str = "TQX_STORE_CRASH_CHILD_DIR";
const CRASH_CHILD_EXIT_CODE: i32 = 86;

/// The process dies (no destructors, so no flush at close) after a flushed
/// increment and an unflushed one: the unflushed one must vanish whole, leaving the
/// flushed checkpoint exactly. RocksDB cannot have flushed the second on its own:
/// it is far below every write-buffer limit.
#[test]
fn an_unflushed_increment_vanishes_whole_when_the_process_dies() {
    if let Ok(dir) = std::env::var(CRASH_DIR_VAR) {
        // The child: runs only when the parent below spawns this test binary.
        let store = Store::open(Path::new(&dir)).unwrap();
        store.write(&first_rows().batch()).unwrap();
        assert_eq!(store.flush().unwrap(), 7);
        let unflushed = Rows {
            applied_lsn: 12,
            meta: b"never durable".to_vec(),
            queues: vec![("emails".into(), None)],
            tasks: vec![(0, None), (5, Some(b"new".to_vec()))],
            payloads: vec![(0, None), (5, Some(Bytes::from("new")))],
        };
        store.write(&unflushed.batch()).unwrap();
        // SAFETY: `_exit` ends the process at once, like a crash; nothing runs after it.
        unsafe { libc::_exit(CRASH_CHILD_EXIT_CODE) };
    }

    let dir = TestDir::new("crash");
    let test_name = format!(
        "{}::an_unflushed_increment_vanishes_whole_when_the_process_dies",
        module_path!().split_once("::").map_or(module_path!(), |(_, rest)| rest)
    );
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &test_name, "--test-threads=1", "--nocapture"])
        .env(CRASH_DIR_VAR, dir.path())
        .output()
        .unwrap();
    assert_eq!(
        child.status.code(),
        Some(CRASH_CHILD_EXIT_CODE),
        "the child did not reach its crash point:\n{}{}",
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.applied_lsn().unwrap(), Some(7));
    assert_eq!(store.load().unwrap(), Some(expected_first()));
}

/// Also the measurement quoted in docs/durability.md:
/// `cargo test --release --lib store::tests::a_checkpoint_of_100k -- --nocapture`.
#[test]
fn a_checkpoint_of_100k_tasks_and_payloads_round_trips() {
    const ROWS: u64 = 100_000;
    const ROW_BYTES: usize = 100;
    let dir = TestDir::new("100k");
    let store = Store::open(dir.path()).unwrap();
    // Rows that vary like real ones (not all-equal bytes, which lz4 would erase).
    let row = |id: u64, kind: u8| -> Vec<u8> {
        let mut row = format!("{kind}:{id:020}:").into_bytes();
        row.extend(
            (0..).map(|i: u64| (id.wrapping_mul(31).wrapping_add(i * 7) % 251) as u8).take(ROW_BYTES - row.len()),
        );
        row
    };
    let rows = Rows {
        applied_lsn: ROWS,
        meta: b"meta".to_vec(),
        queues: vec![("bulk".into(), Some(b"cfg".to_vec()))],
        tasks: (1..=ROWS).map(|id| (id, Some(row(id, b't')))).collect(),
        payloads: (1..=ROWS).map(|id| (id, Some(Bytes::from(row(id, b'p'))))).collect(),
    };

    let started = Instant::now();
    store.write(&rows.batch()).unwrap();
    let written = started.elapsed();
    assert_eq!(store.flush().unwrap(), ROWS);
    let flushed = started.elapsed();
    drop(store);

    let started = Instant::now();
    let store = Store::open(dir.path()).unwrap();
    let opened = started.elapsed();
    let loaded = store.load().unwrap().unwrap();
    let loaded_at = started.elapsed();
    eprintln!(
        "store: {ROWS} tasks + {ROWS} payloads of {ROW_BYTES} B: write {written:?}, write+flush {flushed:?}; \
         open {opened:?}, open+load {loaded_at:?}"
    );
    assert_eq!(loaded.tasks.len() as u64, ROWS);
    assert_eq!(loaded.payloads.len() as u64, ROWS);
    assert_eq!(loaded.tasks[41_999], (42_000, row(42_000, b't')));
    assert_eq!(loaded.payloads[ROWS as usize - 1], (ROWS, Bytes::from(row(ROWS, b'p'))));
    assert_eq!(store.payload(777).unwrap(), Some(Bytes::from(row(777, b'p'))));
}

#[test]
fn a_payload_budget_loads_the_lowest_ids_first_and_leaves_the_rest_in_the_store() {
    let dir = TestDir::new("payload-budget");
    let store = Store::open(dir.path()).unwrap();
    let rows = first_rows();
    store.write(&rows.batch()).unwrap();
    store.flush().unwrap();
    // payloads in id order: 0 (9 bytes), 2 (9), 256 (11), u64::MAX (...): a budget
    // of 20 bytes holds the first two only.
    let loaded = store.load_with_payload_budget(20).unwrap().unwrap();
    let ids: Vec<u64> = loaded.payloads.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [0, 2]);
    assert_eq!(loaded.tasks, expected_first().tasks, "tasks load whole whatever the budget");
    assert_eq!(store.payload(256).unwrap(), Some(Bytes::from("payload-256")), "the rest stay readable one by one");
    assert_eq!(store.load_with_payload_budget(u64::MAX).unwrap(), Some(expected_first()));
}

/// The checkpointer's path: rows handed through `ChangeSink` (as the engine
/// does under its lock) are copied into chunks of plain memory, and only
/// `write_rows` builds RocksDB's batch. Rows spanning many chunks, one row
/// larger than a chunk, small payloads copied and a large one shared, deletes
/// of each kind, and a second round that reuses the first round's chunks all
/// land exactly as a model of the key-value state says.
#[test]
fn rows_taken_through_the_sink_span_chunks_reuse_them_and_load_back_exactly() {
    use std::collections::BTreeMap;

    use crate::engine::{ChangeSink, PayloadRow};

    const TASKS: u64 = 20_000;
    let dir = TestDir::new("sink-chunks");
    let store = Store::open(dir.path()).unwrap();
    let row =
        |id: u64, round: u8| format!("{round}:{id}:").into_bytes().into_iter().cycle().take(100).collect::<Vec<u8>>();
    let huge_row = vec![7u8; 3 * super::ROW_CHUNK_BYTES / 2];
    let large_payload = Bytes::from(vec![9u8; 64 << 10]);
    let mut tasks: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut payloads: BTreeMap<u64, Bytes> = BTreeMap::new();

    let mut rows = store.rows().unwrap();
    rows.queue("bulk", Some(b"cfg-1"));
    rows.queue("gone", Some(b"cfg-gone"));
    for id in 1..=TASKS {
        rows.task(id, Some(&row(id, 1)));
        rows.payload(id, Some(PayloadRow::Slice(&row(id, 2))));
        tasks.insert(id, row(id, 1));
        payloads.insert(id, Bytes::from(row(id, 2)));
    }
    rows.task(TASKS + 1, Some(&huge_row));
    rows.payload(TASKS + 1, Some(PayloadRow::Shared(&large_payload)));
    tasks.insert(TASKS + 1, huge_row.clone());
    payloads.insert(TASKS + 1, large_payload.clone());
    assert!(rows.chunks.len() > 4, "the rows span chunks: {}", rows.chunks.len());
    assert_eq!((rows.task_rows(), rows.queue_rows()), (TASKS as usize + 1, 2));
    store.write_rows(rows, 10, b"meta-1").unwrap();
    assert!(!crate::sync::lock(&store.spare_chunks).is_empty(), "the chunks are kept for the next round");

    let mut rows = store.rows().unwrap();
    rows.queue("gone", None);
    for id in (1..=TASKS).step_by(2) {
        rows.task(id, None);
        rows.payload(id, None);
        tasks.remove(&id);
        payloads.remove(&id);
    }
    for id in (2..=TASKS).step_by(1000) {
        rows.task(id, Some(&row(id, 3)));
        tasks.insert(id, row(id, 3));
    }
    store.write_rows(rows, 11, b"meta-2").unwrap();
    assert_eq!(store.flush().unwrap(), 11);
    drop(store);

    let store = Store::open(dir.path()).unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!((loaded.applied_lsn, loaded.meta.as_slice()), (11, &b"meta-2"[..]));
    assert_eq!(loaded.queues, vec![("bulk".to_string(), b"cfg-1".to_vec())]);
    assert!(loaded.tasks == tasks.into_iter().collect::<Vec<_>>(), "task rows differ from the model");
    assert!(loaded.payloads == payloads.into_iter().collect::<Vec<_>>(), "payloads differ from the model");
}
