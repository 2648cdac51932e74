//! Tests of the WAL format: every way a segment can end, and every way it can be
//! damaged, with the outcome docs/durability.md promises.

use proptest::prelude::*;

use super::format::*;

const SEGMENT: SegmentHeader =
    SegmentHeader { segment_id: 7, first_lsn: 100, first_batch_seq: 40, salt: 0x5eed_5a17, segment_bytes: 0 };

/// A zero-filled segment of `size` bytes holding `batches` (payload lists), and
/// the offset at which each batch starts.
fn segment(batches: &[Vec<Vec<u8>>], size: usize) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = encode_segment_header(&SEGMENT).to_vec();
    let mut starts = Vec::new();
    let (mut seq, mut lsn) = (SEGMENT.first_batch_seq, SEGMENT.first_lsn);
    for payloads in batches {
        starts.push(bytes.len());
        encode_batch(&mut bytes, &SEGMENT, seq, lsn, payloads);
        seq += 1;
        lsn += payloads.len() as u64;
    }
    assert!(bytes.len() <= size);
    bytes.resize(size, 0);
    (bytes, starts)
}

fn three_batches() -> Vec<Vec<Vec<u8>>> {
    vec![
        vec![b"first".to_vec(), b"second record".to_vec()],
        vec![vec![0xAB; 5000]],
        vec![b"x".to_vec(), Vec::new(), b"last".to_vec()],
    ]
}

fn payloads(scan: &SegmentScan<'_>) -> Vec<Vec<u8>> {
    scan.records.iter().map(|r| r.payload.to_vec()).collect()
}

#[test]
fn committed_batches_read_back_with_consecutive_lsns() {
    let batches = three_batches();
    let (bytes, starts) = segment(&batches, 64 << 10);
    let scan = scan_segment(&bytes).unwrap();
    assert_eq!(payloads(&scan), batches.concat());
    let lsns: Vec<u64> = scan.records.iter().map(|r| r.lsn).collect();
    assert_eq!(lsns, (100..106).collect::<Vec<_>>());
    assert_eq!((scan.next_lsn, scan.next_batch_seq, scan.torn_tail), (106, 43, false));
    assert!(scan.end_offset > starts[2]);
    assert!(bytes[scan.end_offset..].iter().all(|&b| b == 0));
}

#[test]
fn an_empty_segment_ends_at_its_header() {
    let (bytes, _) = segment(&[], 4096);
    let scan = scan_segment(&bytes).unwrap();
    assert_eq!(
        (scan.records.len(), scan.end_offset, scan.next_lsn, scan.torn_tail),
        (0, SEGMENT_HEADER_BYTES, 100, false)
    );
}

#[test]
fn a_batch_cut_short_is_a_torn_tail_and_dropped() {
    let (mut bytes, starts) = segment(&three_batches(), 64 << 10);
    let last = starts[2];
    for b in &mut bytes[last + 40..] {
        *b = 0; // only the first 40 bytes of the last batch reached the disk
    }
    let scan = scan_segment(&bytes).unwrap();
    assert_eq!(payloads(&scan), three_batches()[..2].concat());
    assert_eq!((scan.end_offset, scan.next_batch_seq, scan.next_lsn, scan.torn_tail), (last, 42, 103, true));
}

#[test]
fn a_batch_whose_pages_persisted_out_of_order_is_a_torn_tail() {
    // The second batch is the last; its middle never reached the disk but its end did.
    let batches = vec![vec![b"a".to_vec()], vec![vec![1u8; 3000], vec![2u8; 3000], vec![3u8; 3000]]];
    let (mut bytes, starts) = segment(&batches, 64 << 10);
    for b in &mut bytes[starts[1] + 100..starts[1] + 4000] {
        *b = 0;
    }
    let scan = scan_segment(&bytes).unwrap();
    assert_eq!(payloads(&scan), vec![b"a".to_vec()]);
    assert!(scan.torn_tail);
}

#[test]
fn a_damaged_last_header_is_a_torn_tail() {
    let (mut bytes, starts) = segment(&three_batches(), 64 << 10);
    bytes[starts[2] + 9] ^= 0x10;
    let scan = scan_segment(&bytes).unwrap();
    assert_eq!(scan.records.len(), 3);
    assert!(scan.torn_tail);
}

#[test]
fn a_bit_flip_before_a_later_batch_is_corruption_not_a_shorter_history() {
    let (mut bytes, starts) = segment(&three_batches(), 64 << 10);
    bytes[starts[1] + BATCH_HEADER_BYTES + 100] ^= 0x01; // inside the middle batch's body
    match scan_segment(&bytes) {
        Err(FormatError::Corruption { offset, reason }) => {
            assert_eq!(offset, starts[1]);
            assert!(reason.contains("batch 42 follows"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_zeroed_hole_before_a_later_batch_is_corruption() {
    let (mut bytes, starts) = segment(&three_batches(), 64 << 10);
    for b in &mut bytes[starts[1]..starts[2]] {
        *b = 0; // a lost write in the middle of the log
    }
    assert!(matches!(scan_segment(&bytes), Err(FormatError::Corruption { .. })));
}

#[test]
fn a_crafted_payload_cannot_pose_as_a_later_batch() {
    // A client controls payload bytes. Even a payload holding a well-formed
    // header of the next batch, checksummed without the segment's salt, must not
    // turn a torn tail into a refusal to start.
    let forged_segment = SegmentHeader { salt: 0, ..SEGMENT };
    let mut forged = Vec::new();
    encode_batch(&mut forged, &forged_segment, 43, 106, &[b"evil"]);
    let batches = vec![vec![b"a".to_vec()], vec![vec![9u8; 64], forged.clone()]];
    let (mut bytes, starts) = segment(&batches, 64 << 10);
    bytes[starts[1] + 5] ^= 0xFF; // the batch carrying the forgery is torn
    let scan = scan_segment(&bytes).unwrap();
    assert!(scan.torn_tail);
    assert_eq!(payloads(&scan), vec![b"a".to_vec()]);

    // The same forgery made with the salt would be taken for a later batch: the
    // salt is what stops it.
    let mut sealed = Vec::new();
    encode_batch(&mut sealed, &SEGMENT, 43, 106, &[b"evil"]);
    let batches = vec![vec![b"a".to_vec()], vec![vec![9u8; 64], sealed]];
    let (mut bytes, starts) = segment(&batches, 64 << 10);
    bytes[starts[1] + 5] ^= 0xFF;
    assert!(matches!(scan_segment(&bytes), Err(FormatError::Corruption { .. })));
}

#[test]
fn a_batch_from_another_segment_does_not_pass() {
    let other = SegmentHeader { segment_id: 8, ..SEGMENT };
    let mut bytes = encode_segment_header(&SEGMENT).to_vec();
    encode_batch(&mut bytes, &other, SEGMENT.first_batch_seq, SEGMENT.first_lsn, &[b"stale"]);
    bytes.resize(4096, 0);
    let scan = scan_segment(&bytes).unwrap();
    assert!(scan.records.is_empty() && scan.torn_tail);
}

#[test]
fn a_bad_segment_header_is_refused() {
    let (mut bytes, _) = segment(&three_batches(), 64 << 10);
    bytes[20] ^= 1;
    assert!(matches!(scan_segment(&bytes), Err(FormatError::SegmentHeader(_))));
    assert!(matches!(scan_segment(&bytes[..10]), Err(FormatError::SegmentHeader(_))));
    let mut foreign = bytes.clone();
    foreign[0] = b'X';
    assert!(matches!(scan_segment(&foreign), Err(FormatError::SegmentHeader(_))));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Damage confined to the last batch (any bytes, anywhere in it) never loses
    /// an earlier batch, never yields a record of the damaged batch unless the
    /// batch still checks out whole, and never panics.
    #[test]
    fn damage_to_the_last_batch_keeps_every_earlier_batch(
        sizes in prop::collection::vec(prop::collection::vec(0usize..600, 1..4), 2..5),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let batches: Vec<Vec<Vec<u8>>> = sizes
            .iter()
            .enumerate()
            .map(|(b, records)| records.iter().enumerate().map(|(r, &n)| vec![(b * 16 + r) as u8; n]).collect())
            .collect();
        let (mut bytes, starts) = segment(&batches, 64 << 10);
        let last = *starts.last().unwrap();
        // The last batch's own bytes: a crash never writes past them.
        let mut end_of_batches = encode_segment_header(&SEGMENT).to_vec();
        let (mut seq, mut lsn) = (SEGMENT.first_batch_seq, SEGMENT.first_lsn);
        for payloads in &batches {
            encode_batch(&mut end_of_batches, &SEGMENT, seq, lsn, payloads);
            seq += 1;
            lsn += payloads.len() as u64;
        }
        let end = end_of_batches.len();
        for (index, value) in &damage {
            let at = last + index.index(end - last);
            bytes[at] = *value;
        }
        let scan = scan_segment(&bytes).expect("damage to the last batch is a torn tail, never corruption");
        let earlier: Vec<Vec<u8>> = batches[..batches.len() - 1].concat();
        let got = payloads(&scan);
        prop_assert!(got == earlier || got == batches.concat(), "records lost or invented");
    }

    #[test]
    fn arbitrary_bytes_after_a_header_never_panic(tail in prop::collection::vec(any::<u8>(), 0..4096)) {
        let mut bytes = encode_segment_header(&SEGMENT).to_vec();
        bytes.extend_from_slice(&tail);
        let _ = scan_segment(&bytes);
    }
}
