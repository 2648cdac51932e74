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

// Recovery's damage table (docs/durability.md, "What recovery does with
// damage"): one test per row, on the simulated disk.

fn open_accepting(storage: &SimStorage) -> Result<(Log<SimStorage>, Recovered), WalError> {
    Log::open_with(storage.clone(), SEGMENT_BYTES, salts(), super::log::OpenOptions { accept_data_loss: true })
}

/// Offsets of the batch headers in segment `id` (found by their magic; the
/// test payloads never contain it).
fn batch_offsets(storage: &SimStorage, id: u64) -> Vec<usize> {
    let bytes = storage.disk().bytes(id);
    (64..bytes.len().saturating_sub(4)).step_by(8).filter(|&at| &bytes[at..at + 4] == b"TQXB").collect()
}

fn newest(storage: &SimStorage) -> u64 {
    *storage.disk().segment_ids().last().unwrap()
}

fn refusal(result: Result<(Log<SimStorage>, Recovered), WalError>) -> WalError {
    match result {
        Err(error) => error,
        Ok((_, recovered)) => panic!("expected a refusal, recovered {} records", recovered.records.len()),
    }
}

/// A crashed server's log: several segments, the last batch torn.
fn crashed_log(storage: &SimStorage) -> Vec<(u64, Vec<u8>)> {
    let (mut log, _) = open(storage).unwrap();
    let acknowledged = write(&mut log, 0, 120);
    storage.disk().syncs_until_failure = Some(0);
    assert!(log.append(&[record(500), record(501)]).is_err());
    drop(log);
    storage.disk().syncs_until_failure = None;
    storage.disk().crash(|_, _| true); // the unsynced batch reached the disk whole...
    let id = newest(storage);
    let last = *batch_offsets(storage, id).last().unwrap();
    storage.disk().damage(id, |bytes| bytes[last + 40] ^= 0xFF); // ...but one byte of it did not
    acknowledged
}

#[test]
fn a_torn_final_batch_is_dropped_and_described() {
    let storage = SimStorage::default();
    let acknowledged = crashed_log(&storage);
    let (_, recovered) = open(&storage).unwrap();
    assert_eq!(recovered.records, acknowledged);
    let torn = recovered.torn.expect("described");
    assert!(torn.contains(&format!("{:020}.wal", newest(&storage))) && torn.contains("LSN 121"), "{torn}");
}

#[test]
fn a_segment_cut_short_refuses_to_start_and_accept_data_loss_keeps_what_precedes_the_cut() {
    let storage = SimStorage::default();
    let (mut log, _) = open(&storage).unwrap();
    write(&mut log, 0, 120);
    drop(log);
    let id = newest(&storage);
    let cut = batch_offsets(&storage, id)[1] + 10;
    storage.disk().damage(id, |bytes| bytes.truncate(cut));
    match refusal(open(&storage)) {
        WalError::Corruption { segment, offset, reason } => {
            assert_eq!((segment, offset), (id, cut));
            assert!(
                reason.contains(&format!("the file is {cut} bytes but its header says {SEGMENT_BYTES}")),
                "{reason}"
            );
        }
        other => panic!("{other}"),
    }
    let (mut log, recovered) = open_accepting(&storage).unwrap();
    assert_eq!(recovered.dropped.len(), 1, "{:?}", recovered.dropped);
    assert!(recovered.dropped[0].contains("cut short") && recovered.dropped[0].contains("kept every record up to LSN"));
    // The log goes on from what was kept, and opens cleanly afterwards.
    let kept = recovered.records.len() as u64;
    assert_eq!(log.next_lsn(), kept + 1);
    write(&mut log, 1000, 30);
    drop(log);
    let (_, recovered) = open(&storage).unwrap();
    assert_eq!(recovered.records.len() as u64, kept + 30);
}

#[test]
fn a_gap_in_segment_numbers_refuses_to_start() {
    let storage = SimStorage::default();
    let (mut log, _) = open(&storage).unwrap();
    write(&mut log, 0, 300);
    drop(log);
    let ids = storage.disk().segment_ids();
    assert!(ids.len() >= 4);
    storage.disk().delete(ids[1]);
    match refusal(open(&storage)) {
        WalError::Corruption { segment, offset: 0, reason } => {
            assert_eq!(segment, ids[2]);
            assert!(reason.contains("a gap") && reason.contains(&format!("{:020}.wal", ids[1])), "{reason}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn a_missing_newest_segment_refuses_to_start_and_accept_data_loss_continues_without_it() {
    let storage = SimStorage::default();
    let (mut log, _) = open(&storage).unwrap();
    write(&mut log, 0, 300);
    drop(log);
    let id = newest(&storage);
    storage.disk().delete(id);
    match refusal(open(&storage)) {
        WalError::Missing { segment, reason } => {
            assert_eq!(segment, id);
            assert!(reason.contains("the manifest names it"), "{reason}");
        }
        other => panic!("{other}"),
    }
    let (mut log, recovered) = open_accepting(&storage).unwrap();
    assert!(recovered.dropped.iter().any(|d| d.contains("is missing")), "{:?}", recovered.dropped);
    write(&mut log, 1000, 3);
    drop(log);
    open(&storage).expect("after accepting, the log is consistent again");
}

#[test]
fn valid_batches_after_a_bad_one_refuse_to_start() {
    let storage = SimStorage::default();
    let (mut log, _) = open(&storage).unwrap();
    write(&mut log, 0, 60);
    drop(log);
    let id = newest(&storage);
    let batches = batch_offsets(&storage, id);
    let bad = batches[batches.len() - 3];
    storage.disk().damage(id, |bytes| bytes[bad..bad + 32].fill(0));
    match refusal(open(&storage)) {
        WalError::Corruption { segment, offset, reason } => {
            assert_eq!((segment, offset), (id, bad));
            assert!(reason.contains("follows"), "{reason}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn more_than_one_bad_batch_at_the_end_refuses_to_start() {
    // Zeroing the headers of the last three batches once lost them silently.
    let storage = SimStorage::default();
    let (mut log, _) = open(&storage).unwrap();
    write(&mut log, 0, 60);
    drop(log);
    let id = newest(&storage);
    let batches = batch_offsets(&storage, id);
    for &at in &batches[batches.len() - 3..] {
        storage.disk().damage(id, |bytes| bytes[at..at + 32].fill(0));
    }
    match refusal(open(&storage)) {
        WalError::Corruption { segment, offset, reason } => {
            assert_eq!((segment, offset), (id, batches[batches.len() - 3]));
            assert!(reason.contains("a later batch follows"), "{reason}");
        }
        other => panic!("{other}"),
    }
    // Two damaged batches, the first with its header whole: bytes past its end.
    let storage = SimStorage::default();
    let (mut log, _) = open(&storage).unwrap();
    write(&mut log, 0, 60);
    drop(log);
    let id = newest(&storage);
    let batches = batch_offsets(&storage, id);
    let (second_last, last) = (batches[batches.len() - 2], batches[batches.len() - 1]);
    storage.disk().damage(id, |bytes| {
        bytes[second_last + 40] ^= 1;
        bytes[last..last + 32].fill(0);
    });
    assert!(matches!(refusal(open(&storage)), WalError::Corruption { reason, .. } if reason.contains("more than one")));
}

#[test]
fn damage_at_the_end_of_a_cleanly_closed_log_refuses_to_start() {
    let storage = SimStorage::default();
    let (mut log, _) = open(&storage).unwrap();
    write(&mut log, 0, 60);
    log.close_cleanly().unwrap();
    drop(log);
    let id = newest(&storage);
    let last = *batch_offsets(&storage, id).last().unwrap();
    // After a crash this would be a torn final batch; after a clean close it is damage.
    storage.disk().damage(id, |bytes| bytes[last..last + 32].fill(0));
    match refusal(open(&storage)) {
        WalError::Corruption { segment, offset, reason } => {
            assert_eq!((segment, offset), (id, last));
            assert!(reason.contains("closed cleanly"), "{reason}");
        }
        other => panic!("{other}"),
    }
    // A clean log reopens, and reopening marks it open again: a crash from
    // here may tear its end.
    let storage = SimStorage::default();
    let (mut log, _) = open(&storage).unwrap();
    write(&mut log, 0, 9);
    log.close_cleanly().unwrap();
    drop(log);
    let (mut log, recovered) = open(&storage).unwrap();
    assert_eq!(recovered.records.len(), 9);
    storage.disk().syncs_until_failure = Some(0);
    assert!(log.append(&[record(7)]).is_err());
    drop(log);
    storage.disk().syncs_until_failure = None;
    storage.disk().crash(|_, _| true);
    let id = newest(&storage);
    let last = *batch_offsets(&storage, id).last().unwrap();
    storage.disk().damage(id, |bytes| bytes[last + 40] ^= 1);
    assert!(open(&storage).unwrap().1.torn_tail);
}

#[test]
fn a_deleted_manifest_refuses_to_start() {
    let storage = SimStorage::default();
    let (mut log, _) = open(&storage).unwrap();
    write(&mut log, 0, 9);
    drop(log);
    storage.disk().manifest = None;
    assert!(matches!(refusal(open(&storage)), WalError::Manifest { reason } if reason.contains("missing")));
}

#[test]
fn accept_data_loss_cuts_at_the_first_damage_and_lists_what_it_dropped() {
    let storage = SimStorage::default();
    let (mut log, _) = open(&storage).unwrap();
    let acknowledged = write(&mut log, 0, 300);
    drop(log);
    let ids = storage.disk().segment_ids();
    let bad = batch_offsets(&storage, ids[1])[2];
    storage.disk().flip_bit(ids[1], bad + 40, 0);
    let (mut log, recovered) = open_accepting(&storage).unwrap();
    let kept = recovered.records.len();
    assert_eq!(recovered.records, acknowledged[..kept]);
    assert!(kept < acknowledged.len());
    let dropped = recovered.dropped.join("\n");
    assert!(dropped.contains(&format!("{:020}.wal is corrupt at offset {bad}", ids[1])), "{dropped}");
    assert!(dropped.contains(&format!("{:020}.wal..={:020}.wal removed", ids[2], ids[ids.len() - 1])), "{dropped}");
    assert_eq!(storage.disk().segment_ids(), ids[..2]);
    let more = write(&mut log, 1000, 30);
    drop(log);
    let (_, recovered) = open(&storage).unwrap();
    let expected: Vec<_> = acknowledged[..kept].iter().cloned().chain(more).collect();
    assert_eq!(recovered.records, expected);
}

#[test]
fn restart_at_continues_the_log_after_a_checkpoint_past_its_end() {
    let storage = SimStorage::default();
    let (mut log, _) = open(&storage).unwrap();
    write(&mut log, 0, 30);
    log.restart_at(500).unwrap();
    assert_eq!(log.next_lsn(), 500);
    let more = write(&mut log, 0, 6);
    assert_eq!(more[0].0, 500);
    drop(log);
    let (log, recovered) = open(&storage).unwrap();
    assert_eq!(recovered.records, more);
    assert_eq!(log.first_lsn(), 500);
}

#[test]
fn a_failed_manifest_write_at_a_roll_poisons_the_log_and_the_unnamed_segment_is_removed_at_open() {
    let storage = SimStorage::default();
    let (mut log, _) = open(&storage).unwrap();
    let mut acknowledged = Vec::new();
    let segments = storage.disk().segment_ids().len();
    storage.disk().manifest_writes_fail = true;
    let mut i = 0;
    let error = loop {
        match log.append(&[record(i)]) {
            Ok(lsns) => acknowledged.extend(lsns.zip([record(i)])),
            Err(error) => break error,
        }
        i += 1;
    };
    assert!(matches!(error, WalError::Io { operation: "write manifest", .. }), "{error}");
    assert!(matches!(log.append(&[b"x"]), Err(WalError::Poisoned)));
    assert_eq!(storage.disk().segment_ids().len(), segments + 1, "the new segment exists, unnamed");
    drop(log);
    storage.disk().manifest_writes_fail = false;
    let (_, recovered) = open(&storage).unwrap();
    assert_eq!(recovered.records, acknowledged);
    assert!(recovered.notes.iter().any(|n| n.contains("held no batch and was removed")), "{:?}", recovered.notes);
}

#[test]
fn a_segment_newer_than_the_manifest_names_that_holds_records_refuses_to_start() {
    let storage = SimStorage::default();
    let (mut log, _) = open(&storage).unwrap();
    write(&mut log, 0, 30);
    let older_manifest = storage.disk().manifest.clone();
    let before = storage.disk().segment_ids().len();
    write(&mut log, 30, 300);
    assert!(storage.disk().segment_ids().len() >= before + 2);
    drop(log);
    storage.disk().manifest = older_manifest; // an old copy restored
    assert!(matches!(refusal(open(&storage)), WalError::Corruption { reason, .. } if reason.contains("with records")));
}

/// A data directory written before the log stored commands as binary request
/// bodies (format version 1) is refused before anything is read or changed,
/// with a message naming the file, both versions and what the operator can
/// do; `--accept-data-loss` does not treat it as damage and drop it.
#[test]
fn a_log_of_the_previous_format_version_is_refused_with_what_to_do() {
    use super::format::FORMAT_VERSION;
    let storage = SimStorage::default();
    let (mut log, _) = open(&storage).unwrap();
    write(&mut log, 0, 300);
    assert!(storage.disk().segment_ids().len() > 1, "the test should roll segments");
    drop(log);
    // What version 1 wrote: the same headers with version byte 1, checksummed.
    let as_version_1 = |bytes: &mut Vec<u8>| {
        assert_eq!(bytes[7], FORMAT_VERSION);
        bytes[7] = 1;
        let crc = crc32c::crc32c(&bytes[0..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    };
    let ids = storage.disk().segment_ids();
    for &id in &ids {
        storage.disk().damage(id, as_version_1);
    }
    as_version_1(storage.disk().manifest.as_mut().unwrap());
    let before: Vec<Vec<u8>> = ids.iter().map(|&id| storage.disk().bytes(id)).collect();

    let error = refusal(open_accepting(&storage));
    assert!(matches!(&error, WalError::Version { file, found: 1 } if file == "MANIFEST"), "{error:?}");
    let message = error.to_string();
    for words in [
        "MANIFEST was written in log format version 1",
        "this server writes version 2 and cannot read version 1",
        "run the TaskQueueX release that wrote it",
        "move the data directory away",
    ] {
        assert!(message.contains(words), "{words:?} in {message}");
    }
    // Without the manifest (the oldest logs had none), the first segment.
    storage.disk().manifest = None;
    let error = refusal(open_accepting(&storage));
    assert!(
        matches!(&error, WalError::Version { file, found: 1 } if *file == format!("{:020}.wal", ids[0])),
        "{error:?}"
    );
    assert!(error.to_string().contains("cannot read version 1"), "{error}");
    let after: Vec<Vec<u8>> = ids.iter().map(|&id| storage.disk().bytes(id)).collect();
    assert_eq!(storage.disk().segment_ids(), ids, "no segment removed");
    assert!(before == after, "no segment changed");
}
