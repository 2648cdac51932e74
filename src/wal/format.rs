//! The write-ahead log's on-disk format, as pure functions over bytes.
//!
//! A segment file is a header followed by batches; the rest of the file is zero
//! (segments are preallocated and zero-filled). One batch is what one group
//! commit writes with one write and makes durable with one `fdatasync`:
//!
//! ```text
//! segment header (64 bytes)
//!   0  [u8; 8]  magic "TQXWAL\0\x01" (format version 1)
//!   8  u64      segment id
//!  16  u64      LSN of the first record this segment may hold
//!  24  u64      batch sequence number of the first batch in this segment
//!  32  u64      salt: random, chosen when the segment is created
//!  40  [u8; 20] zero
//!  60  u32      CRC32C of bytes 0..60
//! batch header (32 bytes, 8-aligned)
//!   0  u32      magic "TQXB"
//!   4  u32      CRC32C of bytes 8..32 of this header, sealed (see below)
//!   8  u64      batch sequence number (consecutive across the whole log)
//!  16  u64      LSN of the batch's first record
//!  24  u32      body length in bytes (a multiple of 8)
//!  28  u32      CRC32C of the body, sealed
//! body: records, each 8-aligned
//!   0  u32      payload length
//!   4  u32      CRC32C of bytes 8..16 and the payload, sealed
//!   8  u64      LSN (consecutive within and across batches)
//!  16  payload, then zero padding to a multiple of 8
//! ```
//! All integers are little-endian. Every checksum is *sealed*: it continues over
//! the segment id and the segment's salt. The id means a stale batch from a
//! recycled file can never pass as part of this segment; the salt, which clients
//! never see, means a payload crafted to look like a batch header cannot pass a
//! check either (payload bytes are client-controlled and lie inside batches).
//!
//! **Torn tail or corruption.** A crash during a batch's write can persist any
//! subset of its pages, in any order; that batch was never acknowledged (its
//! `fdatasync` did not return). The next batch is only written after that sync
//! returns. So when a batch fails its checks, it is a torn tail if no valid batch
//! header with the *next* sequence number exists after it; then it and
//! everything after it is discarded. If such a header exists, later batches were
//! committed after it, the damage is not a tear, and recovery must refuse to
//! start rather than silently serve a shorter history.

use crc32c::{crc32c, crc32c_append};

pub const SEGMENT_MAGIC: [u8; 8] = *b"TQXWAL\x00\x01";
pub const SEGMENT_HEADER_BYTES: usize = 64;
pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"TQXB");
pub const BATCH_HEADER_BYTES: usize = 32;
pub const RECORD_HEADER_BYTES: usize = 16;
/// Largest record payload and largest batch body: defined, with what they cost
/// and how they relate to the protocols' limits, in `src/limits.rs`.
pub use crate::limits::{
    WAL_BATCH_BODY_BYTES_MAX as BATCH_BODY_BYTES_MAX, WAL_RECORD_BYTES_MAX as RECORD_PAYLOAD_BYTES_MAX,
};

const _: () = assert!(RECORD_HEADER_BYTES + RECORD_PAYLOAD_BYTES_MAX + 8 <= BATCH_BODY_BYTES_MAX);
const _: () = assert!(SEGMENT_HEADER_BYTES % 8 == 0 && BATCH_HEADER_BYTES % 8 == 0);

fn padded(length: usize) -> usize {
    (length + 7) & !7
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub segment_id: u64,
    pub first_lsn: u64,
    pub first_batch_seq: u64,
    pub salt: u64,
}

impl SegmentHeader {
    /// Continues `crc` over the segment id and salt (see the module docs).
    fn seal(&self, crc: u32) -> u32 {
        crc32c_append(crc32c_append(crc, &self.segment_id.to_le_bytes()), &self.salt.to_le_bytes())
    }

    fn checksum(&self, bytes: &[u8]) -> u32 {
        self.seal(crc32c(bytes))
    }
}

pub fn encode_segment_header(header: &SegmentHeader) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
    bytes[0..8].copy_from_slice(&SEGMENT_MAGIC);
    bytes[8..16].copy_from_slice(&header.segment_id.to_le_bytes());
    bytes[16..24].copy_from_slice(&header.first_lsn.to_le_bytes());
    bytes[24..32].copy_from_slice(&header.first_batch_seq.to_le_bytes());
    bytes[32..40].copy_from_slice(&header.salt.to_le_bytes());
    let crc = crc32c(&bytes[0..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    bytes
}

pub fn decode_segment_header(bytes: &[u8]) -> Result<SegmentHeader, FormatError> {
    if bytes.len() < SEGMENT_HEADER_BYTES {
        return Err(FormatError::SegmentHeader("file shorter than a segment header"));
    }
    if bytes[0..8] != SEGMENT_MAGIC {
        return Err(FormatError::SegmentHeader("not a TaskQueueX WAL segment (or another format version)"));
    }
    if crc32c(&bytes[0..60]) != u32_at(bytes, 60) {
        return Err(FormatError::SegmentHeader("segment header checksum mismatch"));
    }
    Ok(SegmentHeader {
        segment_id: u64_at(bytes, 8),
        first_lsn: u64_at(bytes, 16),
        first_batch_seq: u64_at(bytes, 24),
        salt: u64_at(bytes, 32),
    })
}

/// Appends one batch holding `payloads` (LSNs `first_lsn`, `first_lsn + 1`, ...)
/// to `out`, and returns its length in bytes.
///
/// Panics if a payload or the body exceeds its limit: the caller (the log
/// writer) splits batches and refuses oversized records before this point.
pub fn encode_batch<P: AsRef<[u8]>>(
    out: &mut Vec<u8>,
    segment: &SegmentHeader,
    batch_seq: u64,
    first_lsn: u64,
    payloads: &[P],
) -> usize {
    let start = out.len();
    out.resize(start + BATCH_HEADER_BYTES, 0);
    let body_start = out.len();
    for (i, payload) in payloads.iter().enumerate() {
        let payload = payload.as_ref();
        assert!(payload.len() <= RECORD_PAYLOAD_BYTES_MAX, "record payload over the limit");
        let lsn = first_lsn + i as u64;
        let record_start = out.len();
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0u8; 4]);
        out.extend_from_slice(&lsn.to_le_bytes());
        out.extend_from_slice(payload);
        out.resize(record_start + padded(RECORD_HEADER_BYTES + payload.len()), 0);
        let crc =
            segment.seal(crc32c_append(crc32c(&out[record_start + 8..record_start + RECORD_HEADER_BYTES]), payload));
        out[record_start + 4..record_start + 8].copy_from_slice(&crc.to_le_bytes());
    }
    let body_len = out.len() - body_start;
    assert!(body_len <= BATCH_BODY_BYTES_MAX, "batch body over the limit");
    let body_crc = segment.checksum(&out[body_start..]);
    let header = &mut out[start..body_start];
    header[0..4].copy_from_slice(&BATCH_MAGIC.to_le_bytes());
    header[8..16].copy_from_slice(&batch_seq.to_le_bytes());
    header[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    header[24..28].copy_from_slice(&(body_len as u32).to_le_bytes());
    header[28..32].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = segment.checksum(&header[8..32]);
    header[4..8].copy_from_slice(&header_crc.to_le_bytes());
    out.len() - start
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub batch_seq: u64,
    pub first_lsn: u64,
    pub body_len: usize,
    pub body_crc: u32,
}

/// The batch header at `at`, if one is there and its checksum holds.
fn batch_header_at(bytes: &[u8], at: usize, segment: &SegmentHeader) -> Option<BatchHeader> {
    let header = bytes.get(at..at + BATCH_HEADER_BYTES)?;
    if u32_at(header, 0) != BATCH_MAGIC || segment.checksum(&header[8..32]) != u32_at(header, 4) {
        return None;
    }
    let body_len = u32_at(header, 24) as usize;
    if body_len % 8 != 0 || body_len > BATCH_BODY_BYTES_MAX {
        return None;
    }
    Some(BatchHeader {
        batch_seq: u64_at(header, 8),
        first_lsn: u64_at(header, 16),
        body_len,
        body_crc: u32_at(header, 28),
    })
}

/// One record read back from a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub lsn: u64,
    pub payload: &'a [u8],
}

/// Why a segment could not be read in full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormatError {
    SegmentHeader(&'static str),
    /// Damage that is not a torn tail: a later batch exists. Never serve past it.
    Corruption {
        offset: usize,
        reason: String,
    },
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatError::SegmentHeader(reason) => write!(f, "bad segment header: {reason}"),
            FormatError::Corruption { offset, reason } => write!(f, "corruption at offset {offset}: {reason}"),
        }
    }
}

impl std::error::Error for FormatError {}

/// What a scan of one segment found.
#[derive(Debug, PartialEq, Eq)]
pub struct SegmentScan<'a> {
    pub header: SegmentHeader,
    pub records: Vec<Record<'a>>,
    /// Offset just past the last whole batch: where the next batch goes.
    pub end_offset: usize,
    /// Sequence number the next batch must carry.
    pub next_batch_seq: u64,
    /// LSN the next record must carry.
    pub next_lsn: u64,
    /// A torn batch was found (and dropped) at `end_offset`.
    pub torn_tail: bool,
}

/// Reads every committed batch of a segment's bytes, checking every checksum and
/// the continuity of batch sequence numbers and LSNs. Stops at the first zero
/// header (the preallocated end) or at a torn tail; returns `Corruption` if a
/// damaged batch is followed by a later valid one.
pub fn scan_segment(bytes: &[u8]) -> Result<SegmentScan<'_>, FormatError> {
    let header = decode_segment_header(bytes)?;
    let mut scan = SegmentScan {
        header,
        records: Vec::new(),
        end_offset: SEGMENT_HEADER_BYTES,
        next_batch_seq: header.first_batch_seq,
        next_lsn: header.first_lsn,
        torn_tail: false,
    };
    loop {
        let at = scan.end_offset;
        let rest = &bytes[at.min(bytes.len())..];
        if rest.len() < BATCH_HEADER_BYTES || rest[..BATCH_HEADER_BYTES].iter().all(|&b| b == 0) {
            // The zero-filled remainder of the segment: the log ends here, unless
            // a later batch proves the zeros are a hole (a lost write).
            return finish_or_corrupt(bytes, scan, "a zeroed batch header");
        }
        let Some(batch) = batch_header_at(bytes, at, &header) else {
            return finish_or_corrupt(bytes, scan, "a batch header that fails its checksum");
        };
        if batch.batch_seq != scan.next_batch_seq || batch.first_lsn != scan.next_lsn {
            return finish_or_corrupt(bytes, scan, "a batch out of sequence");
        }
        let body_start = at + BATCH_HEADER_BYTES;
        let Some(body) = bytes.get(body_start..body_start + batch.body_len) else {
            return finish_or_corrupt(bytes, scan, "a batch body past the end of the file");
        };
        if header.checksum(body) != batch.body_crc {
            return finish_or_corrupt(bytes, scan, "a batch body that fails its checksum");
        }
        let records_before = scan.records.len();
        match read_records(body, &header, scan.next_lsn, &mut scan.records) {
            Ok(next_lsn) => {
                scan.next_lsn = next_lsn;
                scan.next_batch_seq += 1;
                scan.end_offset = body_start + batch.body_len;
            }
            Err(reason) => {
                // The body checksum held, so the writer wrote this: a bug, not a tear.
                scan.records.truncate(records_before);
                return Err(FormatError::Corruption { offset: at, reason });
            }
        }
    }
}

fn read_records<'a>(
    body: &'a [u8],
    segment: &SegmentHeader,
    mut lsn: u64,
    out: &mut Vec<Record<'a>>,
) -> Result<u64, String> {
    let mut at = 0;
    while at < body.len() {
        let header = body.get(at..at + RECORD_HEADER_BYTES).ok_or("a record header past the batch end")?;
        let length = u32_at(header, 0) as usize;
        if length > RECORD_PAYLOAD_BYTES_MAX {
            return Err(format!("a record of {length} bytes"));
        }
        let payload = body
            .get(at + RECORD_HEADER_BYTES..at + RECORD_HEADER_BYTES + length)
            .ok_or("a record past the batch end")?;
        let crc = segment.seal(crc32c_append(crc32c(&header[8..16]), payload));
        if crc != u32_at(header, 4) {
            return Err(format!("record {lsn} fails its checksum"));
        }
        if u64_at(header, 8) != lsn {
            return Err(format!("record LSN {} where {lsn} was expected", u64_at(header, 8)));
        }
        out.push(Record { lsn, payload });
        lsn += 1;
        at += padded(RECORD_HEADER_BYTES + length);
    }
    Ok(lsn)
}

/// The scan stopped at `scan.end_offset` for `what`. That is the end of the log
/// (torn or clean) unless a valid header of the next batch lies further on.
fn finish_or_corrupt<'a>(bytes: &[u8], mut scan: SegmentScan<'a>, what: &str) -> Result<SegmentScan<'a>, FormatError> {
    let mut at = scan.end_offset + 8;
    while at + BATCH_HEADER_BYTES <= bytes.len() {
        if let Some(later) = batch_header_at(bytes, at, &scan.header) {
            if later.batch_seq >= scan.next_batch_seq {
                return Err(FormatError::Corruption {
                    offset: scan.end_offset,
                    reason: format!("{what}, yet batch {} follows at offset {at}", later.batch_seq),
                });
            }
        }
        at += 8;
    }
    let rest = &bytes[scan.end_offset.min(bytes.len())..];
    scan.torn_tail = rest.iter().any(|&b| b != 0);
    Ok(scan)
}
