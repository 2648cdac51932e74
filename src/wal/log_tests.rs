//! The log against a simulated disk with injected faults: each fault has the
//! outcome docs/durability.md promises.

use super::log::{Log, Recovered, WalError};
use super::storage::{SimStorage, Storage};

pub(super) const SEGMENT_BYTES: usize = 16 << 10;

pub(super) fn salts() -> Box<dyn FnMut() -> u64 + Send> {
    let mut next = 0x9e37_79b9_7f4a_7c15u64;
    Box::new(move || {
        next = next.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        next
    })
}

fn open(storage: &SimStorage) -> Result<(Log<SimStorage>, Recovered), WalError> {
    Log::open(storage.clone(), SEGMENT_BYTES, salts())
}

fn record(i: u64) -> Vec<u8> {
    format!("record {i} {}", "x".repeat((i % 700) as usize)).into_bytes()
}

/// Appends batches of 3 records until `count` records are written; returns the
/// records acknowledged (their batch synced).
fn write(log: &mut Log<SimStorage>, from: u64, count: u64) -> Vec<(u64, Vec<u8>)> {
    let mut acknowledged = Vec::new();
    let mut i = from;
    while i < from + count {
        let batch: Vec<Vec<u8>> = (i..(i + 3).min(from + count)).map(record).collect();
        let lsns = log.append(&batch).expect("append");
        acknowledged.extend(lsns.zip(batch));
        i += 3;
    }
    acknowledged
}

#[test]
fn synced_batches_survive_a_crash_across_several_segments() {
    let storage = SimStorage::default();
    let (mut log, recovered) = open(&storage).unwrap();
    assert!(recovered.records.is_empty());
    let acknowledged = write(&mut log, 0, 600);
    assert!(storage.disk().segment_ids().len() > 3, "the test should roll segments");
    drop(log);
    storage.disk().crash(|_, _| false);
    let (log, recovered) = open(&storage).unwrap();
    assert_eq!(recovered.records, acknowledged);
    assert!(!recovered.torn_tail);
    assert_eq!(log.next_lsn(), 601);
}

#[test]
fn a_batch_torn_by_a_crash_is_dropped_and_the_log_continues() {
    let storage = SimStorage::default();
    let (mut log, _) = open(&storage).unwrap();
    let mut acknowledged = write(&mut log, 0, 30);
    // The last batch is written but its sync fails: not acknowledged.
    storage.disk().syncs_until_failure = Some(0);
    assert!(matches!(log.append(&[record(99), record(100)]), Err(WalError::Io { operation: "sync", .. })));
    assert!(matches!(log.append(&[record(101)]), Err(WalError::Poisoned)), "fail-stop: no later append");
    drop(log);
    storage.disk().syncs_until_failure = None;
    let mut page = 0;
    storage.disk().crash(|_, _| {
        page += 1;
        page % 2 == 0 // half the unsynced pages reach the disk
    });
    let (mut log, recovered) = open(&storage).unwrap();
    assert_eq!(recovered.records, acknowledged);
    // New batches go where the torn one was, and a second recovery reads them.
    acknowledged.extend(write(&mut log, 1000, 10));
    drop(log);
    storage.disk().crash(|_, _| false);
    let (_, recovered) = open(&storage).unwrap();
    assert_eq!(recovered.records, acknowledged);
    assert!(!recovered.torn_tail);
}

#[test]
fn a_full_disk_stops_the_log_without_acknowledging() {
    let storage = SimStorage::default();
    let (mut log, _) = open(&storage).unwrap();
    let acknowledged = write(&mut log, 0, 9);
    storage.disk().bytes_until_full = Some(100);
    let error = log.append(&[vec![7u8; 500]]).unwrap_err();
    assert!(matches!(&error, WalError::Io { error, .. } if error.raw_os_error() == Some(libc::ENOSPC)), "{error}");
    assert!(matches!(log.append(&[b"x"]), Err(WalError::Poisoned)));
    drop(log);
    storage.disk().bytes_until_full = None;
    storage.disk().crash(|_, _| true);
    let (_, recovered) = open(&storage).unwrap();
    assert_eq!(recovered.records, acknowledged);
}

#[test]
fn a_short_write_stops_the_log_without_acknowledging() {
    let storage = SimStorage::default();
    let (mut log, _) = open(&storage).unwrap();
    let acknowledged = write(&mut log, 0, 6);
    storage.disk().short_write_bytes = Some(20);
    assert!(matches!(log.append(&[vec![1u8; 300]]), Err(WalError::Io { operation: "write", .. })));
    drop(log);
    storage.disk().crash(|_, _| true);
    let (_, recovered) = open(&storage).unwrap();
    assert_eq!(recovered.records, acknowledged);
}

#[test]
fn a_bit_flip_in_committed_history_refuses_to_start_naming_file_and_offset() {
    let storage = SimStorage::default();
    let (mut log, _) = open(&storage).unwrap();
    write(&mut log, 0, 60);
    drop(log);
    let first = storage.disk().segment_ids()[0];
    storage.disk().flip_bit(first, 200, 3);
    match open(&storage) {
        Err(WalError::Corruption { segment, offset, .. }) => {
            assert_eq!(segment, first);
            assert!(offset <= 200);
        }
        other => panic!("expected corruption, got {:?}", other.map(|(_, r)| r.records.len())),
    }
}

#[test]
fn a_segment_whose_creation_was_interrupted_is_removed() {
    let storage = SimStorage::default();
    let (mut log, _) = open(&storage).unwrap();
    let acknowledged = write(&mut log, 0, 12);
    drop(log);
    // A crash while creating the next segment: the file exists, all zeros.
    let next = storage.disk().segment_ids().last().unwrap() + 1;
    {
        let mut storage = storage.clone();
        let mut file = storage.create(next, 4096, &[0u8; 0]).unwrap();
        super::storage::SegmentFile::sync(&mut file).unwrap();
    }
    let (mut log, recovered) = open(&storage).unwrap();
    assert_eq!(recovered.records, acknowledged);
    assert!(!storage.disk().segment_ids().contains(&next));
    // The log goes on in the segment before it, and rolls to the removed id
    // (the crash test once found it re-creating segment 1 instead).
    let mut acknowledged = acknowledged;
    acknowledged.extend(write(&mut log, 100, 300));
    let ids = storage.disk().segment_ids();
    assert!(ids.contains(&next) && ids.windows(2).all(|w| w[1] == w[0] + 1), "rolled on from the removed id: {ids:?}");
    drop(log);
    storage.disk().crash(|_, _| false);
    let (_, recovered) = open(&storage).unwrap();
    assert_eq!(recovered.records, acknowledged);
}

#[test]
fn oversized_records_are_refused_without_poisoning() {
    let storage = SimStorage::default();
    let (mut log, _) = open(&storage).unwrap();
    assert!(matches!(log.append(&[vec![0u8; SEGMENT_BYTES]]), Err(WalError::TooLarge { .. })));
    assert!(log.append(&[b"fine"]).is_ok());
}

#[test]
fn real_files_round_trip_through_reopen() {
    use super::storage::DirStorage;
    let dir =
        std::env::temp_dir().join(format!("tqx-wal-test-{}-{:?}", std::process::id(), std::thread::current().id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut acknowledged = Vec::new();
    {
        let (mut log, recovered) = Log::open(DirStorage::new(dir.clone()).unwrap(), SEGMENT_BYTES, salts()).unwrap();
        assert!(recovered.records.is_empty());
        for i in 0..400u64 {
            let lsns = log.append(&[record(i)]).unwrap();
            acknowledged.extend(lsns.zip([record(i)]));
        }
    }
    let segments = std::fs::read_dir(&dir).unwrap().count();
    assert!(segments > 1, "expected several segment files, found {segments}");
    let (_, recovered) = Log::open(DirStorage::new(dir.clone()).unwrap(), SEGMENT_BYTES, salts()).unwrap();
    assert_eq!(recovered.records, acknowledged);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn segments_below_a_checkpoint_are_removed_and_the_rest_still_recovers() {
    let storage = SimStorage::default();
    let (mut log, _) = open(&storage).unwrap();
    let written = write(&mut log, 0, 300);
    let segments_before = storage.disk().segment_ids().len();
    assert!(segments_before >= 4, "the test needs several segments, got {segments_before}");
    assert_eq!(log.first_lsn(), 1);

    let checkpoint_lsn = 150;
    let removed = log.remove_through(checkpoint_lsn).unwrap();
    assert!(removed >= 1);
    assert!(log.first_lsn() <= checkpoint_lsn + 1, "a record after the checkpoint was removed");
    assert_eq!(storage.disk().segment_ids().len(), segments_before - removed);
    // The segment being written is never removed, even when the checkpoint covers it all.
    log.remove_through(u64::MAX).unwrap();
    assert_eq!(storage.disk().segment_ids().len(), 1);
    let more = write(&mut log, 300, 10);

    storage.disk().crash(|_, _| false);
    let (log, recovered) = open(&storage).unwrap();
    let first = recovered.records.first().map(|(lsn, _)| *lsn).unwrap();
    assert_eq!(first, log.first_lsn());
    let expected: Vec<_> = written.into_iter().chain(more).filter(|(lsn, _)| *lsn >= first).collect();
    assert_eq!(recovered.records, expected, "every record from the first kept segment on");
    assert_eq!(log.next_lsn(), 311);
}
