//! The log: appends group-commit batches to segments (rolling to a new one when
//! the current is full) and recovers the committed records on open.
//!
//! **Fail-stop.** Any write or sync error poisons the log: that call and every
//! later one fail, and the server must stop without acknowledging anything the
//! failed batch held. A sync is never retried: after a failed `fdatasync` the
//! kernel may have dropped the dirty pages, so a retry that "succeeds" proves
//! nothing.
//!
//! **Recovery** reads every segment in order and checks that each continues the
//! previous one (segment ids, LSNs and batch sequence numbers without gaps). A
//! torn tail is accepted only in the last segment; it is zeroed and synced before
//! new batches are written over it. A last segment whose creation was interrupted
//! (no valid header, nothing but zeros after it) is removed. Anything else that
//! fails a check is corruption, reported with the segment and offset.

use std::io;
use std::ops::Range;

use super::format::{
    decode_segment_header, encode_batch, encode_segment_header, scan_segment, FormatError, SegmentHeader,
    BATCH_BODY_BYTES_MAX, BATCH_HEADER_BYTES, RECORD_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX, SEGMENT_HEADER_BYTES,
};
use super::storage::{SegmentFile, Storage};

#[derive(Debug)]
pub enum WalError {
    /// A write or sync failed; the log is poisoned (fail-stop).
    Io { operation: &'static str, segment: u64, error: io::Error },
    /// An earlier error poisoned the log.
    Poisoned,
    /// Recovery found damage that is not a torn tail.
    Corruption { segment: u64, offset: usize, reason: String },
    /// A record or batch over the format's limits (refused; the log is intact).
    TooLarge { bytes: usize, limit: usize },
}

impl std::fmt::Display for WalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalError::Io { operation, segment, error } => {
                write!(f, "WAL {operation} failed on segment {segment}: {error}")
            }
            WalError::Poisoned => write!(f, "the WAL stopped after an earlier I/O error"),
            WalError::Corruption { segment, offset, reason } => {
                write!(f, "WAL segment {segment:020}.wal is corrupt at offset {offset}: {reason}")
            }
            WalError::TooLarge { bytes, limit } => write!(f, "{bytes} bytes is over the WAL limit of {limit}"),
        }
    }
}

impl std::error::Error for WalError {}

/// What recovery found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every committed record, in LSN order.
    pub records: Vec<(u64, Vec<u8>)>,
    /// A torn batch at the end was discarded.
    pub torn_tail: bool,
}

pub struct Log<S: Storage> {
    storage: S,
    segment_bytes: usize,
    current: Option<(S::File, SegmentHeader)>,
    /// `(segment id, first LSN)` of every segment present, oldest first.
    segments: Vec<(u64, u64)>,
    end_offset: usize,
    next_lsn: u64,
    next_batch_seq: u64,
    poisoned: bool,
    /// Salts for new segments (random in production, seeded in tests).
    salt: Box<dyn FnMut() -> u64 + Send>,
    buffer: Vec<u8>,
}

fn corruption(segment: u64, offset: usize, reason: impl Into<String>) -> WalError {
    WalError::Corruption { segment, offset, reason: reason.into() }
}

impl<S: Storage> Log<S> {
    /// Opens the log in `storage`, recovering what it holds.
    pub fn open(
        mut storage: S,
        segment_bytes: usize,
        salt: Box<dyn FnMut() -> u64 + Send>,
    ) -> Result<(Self, Recovered), WalError> {
        let io_error = |operation, segment, error| WalError::Io { operation, segment, error };
        let ids = storage.list().map_err(|e| io_error("list", 0, e))?;
        let mut recovered = Recovered::default();
        let mut log = Log {
            storage,
            segment_bytes,
            current: None,
            segments: Vec::new(),
            end_offset: 0,
            next_lsn: 1,
            next_batch_seq: 1,
            poisoned: false,
            salt,
            buffer: Vec::new(),
        };
        for (i, &id) in ids.iter().enumerate() {
            let last = i + 1 == ids.len();
            let mut file = log.storage.open(id).map_err(|e| io_error("open", id, e))?;
            let bytes = file.read_all().map_err(|e| io_error("read", id, e))?;
            let scan = match scan_segment(&bytes) {
                Ok(scan) => scan,
                Err(FormatError::SegmentHeader(_))
                    if last && (bytes.len() < SEGMENT_HEADER_BYTES || bytes.iter().all(|&b| b == 0)) =>
                {
                    // Its creation was interrupted before the header was durable:
                    // it never held a batch.
                    log.storage.remove(id).map_err(|e| io_error("remove", id, e))?;
                    break;
                }
                Err(FormatError::SegmentHeader(reason)) => return Err(corruption(id, 0, reason)),
                Err(FormatError::Corruption { offset, reason }) => return Err(corruption(id, offset, reason)),
            };
            let header = scan.header;
            if header.segment_id != id {
                return Err(corruption(id, 0, format!("the header names segment {}", header.segment_id)));
            }
            if i > 0
                && (header.first_lsn != log.next_lsn
                    || header.first_batch_seq != log.next_batch_seq
                    || ids[i - 1] + 1 != id)
            {
                return Err(corruption(id, 0, "the segment does not continue the previous one"));
            }
            if scan.torn_tail && !last {
                return Err(corruption(id, scan.end_offset, "a damaged batch in a segment that later segments follow"));
            }
            log.segments.push((id, header.first_lsn));
            recovered.records.extend(scan.records.iter().map(|r| (r.lsn, r.payload.to_vec())));
            recovered.torn_tail |= scan.torn_tail;
            log.next_lsn = scan.next_lsn;
            log.next_batch_seq = scan.next_batch_seq;
            log.end_offset = scan.end_offset;
            if scan.torn_tail {
                // Only the last segment gets here (checked above).
                let zeros = vec![0u8; bytes.len() - scan.end_offset];
                file.write_at(scan.end_offset as u64, &zeros).map_err(|e| io_error("zero torn tail", id, e))?;
                file.sync().map_err(|e| io_error("sync", id, e))?;
            }
            // Every segment becomes current in turn, so that when the last file
            // turns out to be an interrupted creation (removed above), the one
            // before it is written on and the next roll reuses the removed id.
            log.current = Some((file, header));
        }
        Ok((log, recovered))
    }

    /// LSN the next record will get.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// The lowest LSN the segments present may hold (`next_lsn` if there are none).
    pub fn first_lsn(&self) -> u64 {
        self.segments.first().map_or(self.next_lsn, |&(_, first_lsn)| first_lsn)
    }

    /// Removes the segments whose records all have LSNs up to `lsn` (a
    /// checkpoint holds their effects), oldest first; never the segment being
    /// written. Returns how many were removed. A failed removal leaves the log
    /// consistent (the segment is simply kept), so it does not poison the log.
    pub fn remove_through(&mut self, lsn: u64) -> Result<usize, WalError> {
        let mut removed = 0;
        // Segment i holds LSNs below the first LSN of segment i + 1.
        while self.segments.len() >= 2 && self.segments[1].1 <= lsn.saturating_add(1) {
            let (id, _) = self.segments[0];
            self.storage.remove(id).map_err(|error| WalError::Io { operation: "remove", segment: id, error })?;
            self.segments.remove(0);
            removed += 1;
        }
        Ok(removed)
    }

    /// Writes `payloads` as one batch and syncs it. Returns their LSNs; only then
    /// are they durable and may their requests be acknowledged.
    pub fn append<P: AsRef<[u8]>>(&mut self, payloads: &[P]) -> Result<Range<u64>, WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        let mut body_bytes = 0usize;
        for payload in payloads {
            let length = payload.as_ref().len();
            if length > RECORD_PAYLOAD_BYTES_MAX {
                return Err(WalError::TooLarge { bytes: length, limit: RECORD_PAYLOAD_BYTES_MAX });
            }
            body_bytes += (RECORD_HEADER_BYTES + length + 7) & !7;
        }
        let batch_bytes = BATCH_HEADER_BYTES + body_bytes;
        let capacity = self.segment_bytes - SEGMENT_HEADER_BYTES;
        if body_bytes > BATCH_BODY_BYTES_MAX || batch_bytes > capacity {
            return Err(WalError::TooLarge { bytes: batch_bytes, limit: BATCH_BODY_BYTES_MAX.min(capacity) });
        }
        if self.current.is_none() || self.end_offset + batch_bytes > self.segment_bytes {
            self.roll()?;
        }
        let (file, header) = self.current.as_mut().expect("a segment is open after roll");
        self.buffer.clear();
        encode_batch(&mut self.buffer, header, self.next_batch_seq, self.next_lsn, payloads);
        debug_assert_eq!(self.buffer.len(), batch_bytes);
        let segment = header.segment_id;
        let result = file
            .write_at(self.end_offset as u64, &self.buffer)
            .map_err(|error| WalError::Io { operation: "write", segment, error })
            .and_then(|()| file.sync().map_err(|error| WalError::Io { operation: "sync", segment, error }));
        if let Err(error) = result {
            self.poisoned = true;
            return Err(error);
        }
        let first = self.next_lsn;
        self.next_lsn += payloads.len() as u64;
        self.next_batch_seq += 1;
        self.end_offset += batch_bytes;
        Ok(first..self.next_lsn)
    }

    fn roll(&mut self) -> Result<(), WalError> {
        let id = self.current.as_ref().map_or(1, |(_, header)| header.segment_id + 1);
        let header = SegmentHeader {
            segment_id: id,
            first_lsn: self.next_lsn,
            first_batch_seq: self.next_batch_seq,
            salt: (self.salt)(),
        };
        let bytes = encode_segment_header(&header);
        debug_assert_eq!(decode_segment_header(&bytes).ok(), Some(header));
        match self.storage.create(id, self.segment_bytes, &bytes) {
            Ok(file) => {
                self.segments.push((id, header.first_lsn));
                self.current = Some((file, header));
                self.end_offset = SEGMENT_HEADER_BYTES;
                Ok(())
            }
            Err(error) => {
                self.poisoned = true;
                Err(WalError::Io { operation: "create segment", segment: id, error })
            }
        }
    }
}
