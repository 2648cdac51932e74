//! The write-ahead log's on-disk format, as pure functions over bytes.
//!
//! A segment file is a header followed by batches; the rest of the file is zero
//! (segments are preallocated and zero-filled). One batch is what one group
//! commit writes with one write and makes durable with one `fdatasync`:
//!
//! ```text
//! segment header (64 bytes)
//!   0  [u8; 8]  magic "TQXWAL\0" and the format version (2: see FORMAT_VERSION)
//!   8  u64      segment id
//!  16  u64      LSN of the first record this segment may hold
//!  24  u64      batch sequence number of the first batch in this segment
//!  32  u64      salt: random, chosen when the segment is created
//!  40  u64      the segment file's size in bytes (0 in segments written before
//!               this field existed: their size is not checked)
//!  48  [u8; 12] zero
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
//! start rather than silently serve a shorter history. More precisely, a tear
//! is one batch's write cut short, so [`scan_segment`] also refuses when the
//! bytes after the last good batch cannot all belong to that one batch:
//! - a valid header there that is not the next batch's;
//! - a valid header of the next batch, whose body fails, followed by anything
//!   but zeros past the end its header gives;
//! - a header that fails, after which the batch's records chain up to a point
//!   where the next record sits 32 bytes further on (a batch header's room:
//!   within one batch, records are contiguous), i.e. a second batch follows;
//! - non-zero bytes further than the largest batch could reach;
//! - a file shorter than its header says (a crash cannot shorten a segment:
//!   its size is synced before any batch goes in).
//!
//! The manifest (a small file next to the segments, [`Manifest`]) names the
//! newest segment and whether the log was closed cleanly; `log.rs` uses it to
//! tell a missing newest segment, or a tail cut after a clean stop, from a crash.
//!
//! **Format version.** The last byte of both magics is [`FORMAT_VERSION`]: it
//! covers this layout and the records' (`record.rs`). A file of another
//! version is refused ([`FormatError::Version`], `WalError::Version`), never
//! read with the wrong layout and never dropped as damage.

use crc32c::{crc32c, crc32c_append};

/// The log format this server writes and the only one it reads. 1: records in
/// their own codec; 2: a command is its binary request body (`record.rs`).
pub const FORMAT_VERSION: u8 = 2;
pub const SEGMENT_MAGIC: [u8; 8] = versioned(*b"TQXWAL\x00");

/// A magic: seven bytes that name the kind of file, then the format version.
const fn versioned(kind: [u8; 7]) -> [u8; 8] {
    let mut magic = [FORMAT_VERSION; 8];
    let mut i = 0;
    while i < 7 {
        magic[i] = kind[i];
        i += 1;
    }
    magic
}

/// The format version a file claims if it begins with `magic`'s kind (the
/// same seven bytes, any version byte); `None` if it is not such a file.
pub fn version_of(bytes: &[u8], magic: &[u8; 8]) -> Option<u8> {
    (bytes.len() >= 8 && bytes[..7] == magic[..7]).then(|| bytes[7])
}
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
    /// The file's size in bytes; 0 in segments from before this field.
    pub segment_bytes: u64,
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
    bytes[40..48].copy_from_slice(&header.segment_bytes.to_le_bytes());
    let crc = crc32c(&bytes[0..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    bytes
}

pub fn decode_segment_header(bytes: &[u8]) -> Result<SegmentHeader, FormatError> {
    if bytes.len() < SEGMENT_HEADER_BYTES {
        return Err(FormatError::SegmentHeader("file shorter than a segment header"));
    }
    if let Some(found) = version_of(bytes, &SEGMENT_MAGIC).filter(|&found| found != FORMAT_VERSION) {
        return Err(FormatError::Version { found });
    }
    if bytes[0..8] != SEGMENT_MAGIC {
        return Err(FormatError::SegmentHeader("not a TaskQueueX WAL segment"));
    }
    if crc32c(&bytes[0..60]) != u32_at(bytes, 60) {
        return Err(FormatError::SegmentHeader("segment header checksum mismatch"));
    }
    Ok(SegmentHeader {
        segment_id: u64_at(bytes, 8),
        first_lsn: u64_at(bytes, 16),
        first_batch_seq: u64_at(bytes, 24),
        salt: u64_at(bytes, 32),
        segment_bytes: u64_at(bytes, 40),
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
    /// A segment of another format version (see [`FORMAT_VERSION`]): not damage,
    /// and not to be read with this version's layout.
    Version {
        found: u8,
    },
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
            FormatError::Version { found } => {
                write!(
                    f,
                    "written in log format version {found}; this server reads and writes version {FORMAT_VERSION}"
                )
            }
            FormatError::Corruption { offset, reason } => write!(f, "corruption at offset {offset}: {reason}"),
        }
    }
}

impl std::error::Error for FormatError {}

/// What is known of a torn final batch, which recovery drops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// Where the torn batch starts (the scan's `end_offset`).
    pub offset: usize,
    /// Bytes from `offset` to the last non-zero byte after it.
    pub bytes: usize,
    /// The sequence number and first LSN that batch would have carried.
    pub batch_seq: u64,
    pub first_lsn: u64,
    /// Records of it that still check out whole (LSNs from `first_lsn` on):
    /// a lower bound on what it held.
    pub records_readable: usize,
    /// Its body length, if its header checked out.
    pub body_len: Option<usize>,
}

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
    /// What is known of it.
    pub torn: Option<TornTail>,
}

/// Reads every committed batch of a segment's bytes, checking every checksum and
/// the continuity of batch sequence numbers and LSNs. Stops at the first zero
/// header (the preallocated end) or at a torn tail; returns `Corruption` for
/// any damage a crash cannot explain (module docs).
pub fn scan_segment(bytes: &[u8]) -> Result<SegmentScan<'_>, FormatError> {
    match scan_segment_prefix(bytes)? {
        (scan, None) => Ok(scan),
        (_, Some(error)) => Err(error),
    }
}

/// Like [`scan_segment`], but on corruption also returns what was read before
/// it: every whole batch before the damage, with `end_offset` where the damage
/// starts (what `--accept-data-loss` keeps). Fails only on a bad segment header.
pub fn scan_segment_prefix(bytes: &[u8]) -> Result<(SegmentScan<'_>, Option<FormatError>), FormatError> {
    let header = decode_segment_header(bytes)?;
    let mut scan = SegmentScan {
        header,
        records: Vec::new(),
        end_offset: SEGMENT_HEADER_BYTES,
        next_batch_seq: header.first_batch_seq,
        next_lsn: header.first_lsn,
        torn_tail: false,
        torn: None,
    };
    let error = loop {
        let at = scan.end_offset;
        let rest = &bytes[at.min(bytes.len())..];
        if rest.len() < BATCH_HEADER_BYTES || rest[..BATCH_HEADER_BYTES].iter().all(|&b| b == 0) {
            // The zero-filled remainder of the segment: the log ends here, unless
            // what follows proves the zeros are a hole (a lost write).
            break end_of_log(bytes, &mut scan, "a zeroed batch header", None);
        }
        let Some(batch) = batch_header_at(bytes, at, &header) else {
            break end_of_log(bytes, &mut scan, "a batch header that fails its checksum", None);
        };
        if batch.batch_seq != scan.next_batch_seq || batch.first_lsn != scan.next_lsn {
            // The header checks out, so this segment's writer wrote it, but not
            // here: a torn write never moves a whole header.
            break Some(FormatError::Corruption {
                offset: at,
                reason: format!(
                    "batch {} (first LSN {}) where batch {} (first LSN {}) was expected",
                    batch.batch_seq, batch.first_lsn, scan.next_batch_seq, scan.next_lsn
                ),
            });
        }
        let body_start = at + BATCH_HEADER_BYTES;
        let Some(body) = bytes.get(body_start..body_start + batch.body_len) else {
            break end_of_log(bytes, &mut scan, "a batch body past the end of the file", Some(batch.body_len));
        };
        if header.checksum(body) != batch.body_crc {
            break end_of_log(bytes, &mut scan, "a batch body that fails its checksum", Some(batch.body_len));
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
                break Some(FormatError::Corruption { offset: at, reason });
            }
        }
    };
    // A segment's size is synced when it is created, before any batch goes in,
    // so no crash leaves it shorter: it was cut (and whatever stood past the
    // cut is gone).
    let size_error =
        (header.segment_bytes != 0 && (bytes.len() as u64) < header.segment_bytes).then(|| FormatError::Corruption {
            offset: bytes.len(),
            reason: format!(
                "the file is {} bytes but its header says {}: it was cut short (a crash cannot shorten a segment)",
                bytes.len(),
                header.segment_bytes
            ),
        });
    if size_error.is_some() {
        scan.torn_tail = false;
        scan.torn = None;
    }
    Ok((scan, size_error.or(error)))
}

/// The record at `at` in `bytes`, if one is there whose sealed checksum holds:
/// its LSN and its padded length.
fn record_at(bytes: &[u8], at: usize, segment: &SegmentHeader) -> Option<(u64, usize)> {
    let header = bytes.get(at..at.checked_add(RECORD_HEADER_BYTES)?)?;
    let length = u32_at(header, 0) as usize;
    if length > RECORD_PAYLOAD_BYTES_MAX {
        return None;
    }
    let payload = bytes.get(at + RECORD_HEADER_BYTES..at + RECORD_HEADER_BYTES + length)?;
    let crc = segment.seal(crc32c_append(crc32c(&header[8..16]), payload));
    (crc == u32_at(header, 4)).then(|| (u64_at(header, 8), padded(RECORD_HEADER_BYTES + length)))
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

/// The scan stopped at `scan.end_offset` for `what` (with the batch's body
/// length if its header checked out). That is the end of the log — clean, or a
/// torn final batch, recorded in `scan.torn` — unless what follows cannot be
/// one batch's write cut short (module docs); then it is corruption.
fn end_of_log(bytes: &[u8], scan: &mut SegmentScan<'_>, what: &str, body_len: Option<usize>) -> Option<FormatError> {
    let start = scan.end_offset;
    let corrupt = |reason: String| Some(FormatError::Corruption { offset: start, reason: format!("{what}, {reason}") });
    let mut at = start + 8;
    while at + BATCH_HEADER_BYTES <= bytes.len() {
        if let Some(later) = batch_header_at(bytes, at, &scan.header) {
            if later.batch_seq >= scan.next_batch_seq {
                return corrupt(format!("yet batch {} follows at offset {at}", later.batch_seq));
            }
        }
        at += 8;
    }
    let rest = &bytes[start.min(bytes.len())..];
    let Some(last) = rest.iter().rposition(|&b| b != 0) else {
        return None; // zeros to the end: the log ends cleanly here
    };
    let end = start + last + 1;
    if let Some(body_len) = body_len {
        let batch_end = start + BATCH_HEADER_BYTES + body_len;
        if end > batch_end {
            return corrupt(format!(
                "and non-zero bytes reach offset {end}, past that batch's end at {batch_end}: more than one batch \
                 is damaged"
            ));
        }
    }
    if end > start + BATCH_HEADER_BYTES + BATCH_BODY_BYTES_MAX {
        return corrupt(format!("and non-zero bytes reach offset {end}, further than one batch can reach"));
    }
    // Walk the torn batch's records while they check out.
    let (mut lsn, mut record) = (scan.next_lsn, start + BATCH_HEADER_BYTES);
    while let Some((found, length)) = record_at(bytes, record, &scan.header) {
        if found != lsn {
            break;
        }
        lsn += 1;
        record += length;
    }
    // Within one batch the next record starts right where the chain stopped;
    // found one header's room further on, it starts a later batch.
    if let Some((found, _)) = record_at(bytes, record + BATCH_HEADER_BYTES, &scan.header) {
        if found == lsn {
            return corrupt(format!(
                "and record {lsn} follows at offset {} after a batch header's room: a later batch follows, so this \
                 is not a torn final batch",
                record + BATCH_HEADER_BYTES
            ));
        }
    }
    scan.torn_tail = true;
    scan.torn = Some(TornTail {
        offset: start,
        bytes: end - start,
        batch_seq: scan.next_batch_seq,
        first_lsn: scan.next_lsn,
        records_readable: (lsn - scan.next_lsn) as usize,
        body_len,
    });
    None
}

/// The manifest: a small file next to the segments that names the newest
/// segment and says whether the log was closed cleanly. It is replaced
/// atomically (a temporary file, synced, renamed, the directory synced) only
/// when a segment is created, when the log is opened and when it is closed
/// cleanly — never per batch, so it costs the hot path nothing.
///
/// ```text
///   0  [u8; 8]  magic "TQXMAN\0" and the format version (FORMAT_VERSION)
///   8  u64      newest segment id (0: none yet)
///  16  u64      its first LSN
///  24  u64      its salt
///  32  u64      flags: bit 0 = closed cleanly
///  40  u64      closed cleanly: the LSN of the last record (all of them synced)
///  48  [u8; 12] zero
///  60  u32      CRC32C of bytes 0..60
/// ```
///
/// Why it is enough: the manifest names a segment only after the segment was
/// created and synced, and before any batch goes into it. So a newest segment
/// the manifest names but the directory lacks was deleted (not lost in a
/// crash), and a segment newer than the manifest's never held a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    pub newest_segment_id: u64,
    pub newest_first_lsn: u64,
    pub newest_salt: u64,
    /// `Some(last LSN)` if the log was closed cleanly (nothing can be torn).
    pub closed_at_lsn: Option<u64>,
}

pub const MANIFEST_MAGIC: [u8; 8] = versioned(*b"TQXMAN\x00");
pub const MANIFEST_BYTES: usize = 64;

pub fn encode_manifest(manifest: &Manifest) -> [u8; MANIFEST_BYTES] {
    let mut bytes = [0u8; MANIFEST_BYTES];
    bytes[0..8].copy_from_slice(&MANIFEST_MAGIC);
    bytes[8..16].copy_from_slice(&manifest.newest_segment_id.to_le_bytes());
    bytes[16..24].copy_from_slice(&manifest.newest_first_lsn.to_le_bytes());
    bytes[24..32].copy_from_slice(&manifest.newest_salt.to_le_bytes());
    bytes[32..40].copy_from_slice(&u64::from(manifest.closed_at_lsn.is_some()).to_le_bytes());
    bytes[40..48].copy_from_slice(&manifest.closed_at_lsn.unwrap_or(0).to_le_bytes());
    let crc = crc32c(&bytes[0..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    bytes
}

pub fn decode_manifest(bytes: &[u8]) -> Result<Manifest, &'static str> {
    if bytes.len() != MANIFEST_BYTES {
        return Err("the manifest is not 64 bytes long");
    }
    if bytes[0..8] != MANIFEST_MAGIC {
        return Err("not a TaskQueueX WAL manifest (or another format version)");
    }
    if crc32c(&bytes[0..60]) != u32_at(bytes, 60) {
        return Err("the manifest fails its checksum");
    }
    let flags = u64_at(bytes, 32);
    Ok(Manifest {
        newest_segment_id: u64_at(bytes, 8),
        newest_first_lsn: u64_at(bytes, 16),
        newest_salt: u64_at(bytes, 24),
        closed_at_lsn: (flags & 1 == 1).then(|| u64_at(bytes, 40)),
    })
}
