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
//! previous one (segment ids, LSNs and batch sequence numbers without gaps). The
//! only damage a crash can cause is a torn final batch of the newest segment; it
//! is zeroed and synced before new batches are written over it. Anything else —
//! a segment cut short, a gap, a missing newest segment (the manifest names it),
//! damage before valid batches, more than one bad batch, any damage after a
//! clean close — is refused, naming the file, the offset, what was expected and
//! what was found; or, with [`OpenOptions::accept_data_loss`], the log is cut at
//! the first damage and everything dropped is listed in [`Recovered::dropped`].
//!
//! **The manifest** (`format::Manifest`) is rewritten only at a segment roll
//! (after the new segment is created and synced, before any batch goes into it),
//! at open and at a clean close. A segment newer than the one it names never held
//! a batch (a roll interrupted by a crash) and is removed; the one it names must
//! be present. A log without a manifest whose segments predate it (their headers
//! carry no size) is read with the older rules and given one (such segments
//! were written by format version 1, which is now refused before this).
//!
//! **Format version** (`format::FORMAT_VERSION`). A manifest or segment of
//! another version is refused ([`WalError::Version`]) before anything is read
//! with this version's layout, removed or rewritten, with or without
//! [`OpenOptions::accept_data_loss`]: it is not damage.

use std::io;
use std::ops::Range;

use super::format::{
    decode_manifest, decode_segment_header, encode_batch, encode_manifest, encode_segment_header, scan_segment_prefix,
    version_of, FormatError, Manifest, SegmentHeader, BATCH_BODY_BYTES_MAX, BATCH_HEADER_BYTES, FORMAT_VERSION,
    MANIFEST_MAGIC, RECORD_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC,
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
    /// The newest segment the manifest names is not there.
    Missing { segment: u64, reason: String },
    /// The manifest is damaged or missing, or the log contradicts it.
    Manifest { reason: String },
    /// A record or batch over the format's limits (refused; the log is intact).
    TooLarge { bytes: usize, limit: usize },
    /// `file` (a segment or the manifest) was written in another log format
    /// version: refused, even with `accept_data_loss` (it is not damage), and
    /// nothing is changed on disk.
    Version { file: String, found: u8 },
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
            WalError::Missing { segment, reason } => write!(f, "WAL segment {segment:020}.wal is missing: {reason}"),
            WalError::Manifest { reason } => write!(f, "WAL manifest {}: {reason}", super::storage::MANIFEST_FILE),
            WalError::TooLarge { bytes, limit } => write!(f, "{bytes} bytes is over the WAL limit of {limit}"),
            WalError::Version { file, found } => write!(
                f,
                "the write-ahead log file {file} was written in log format version {found}; this server writes \
                 version {FORMAT_VERSION} and cannot read version {found} (it stores commands differently). Nothing \
                 was changed. To keep this data, run the TaskQueueX release that wrote it; to start empty, move the \
                 data directory away (docs/durability.md, \"Format version\")"
            ),
        }
    }
}

impl std::error::Error for WalError {}

/// How to open the log.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions {
    /// `--accept-data-loss`: instead of refusing to start on damage a crash
    /// cannot cause, keep the log up to the first damage, drop the rest, and
    /// list exactly what was dropped in [`Recovered::dropped`].
    pub accept_data_loss: bool,
}

/// What recovery found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every committed record, in LSN order.
    pub records: Vec<(u64, Vec<u8>)>,
    /// A torn batch at the end was discarded.
    pub torn_tail: bool,
    /// What was known of it, for the log line.
    pub torn: Option<String>,
    /// With `accept_data_loss`: each piece of damage found and what was dropped
    /// because of it. Empty otherwise (damage is an error then).
    pub dropped: Vec<String>,
    /// Things recovery did that an operator may want to know (a segment whose
    /// creation was interrupted removed, a manifest written for an older log).
    pub notes: Vec<String>,
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

fn io_error(operation: &'static str, segment: u64, error: io::Error) -> WalError {
    WalError::Io { operation, segment, error }
}

/// Damage found at open: an error, or with `accept_data_loss` a line in
/// `dropped` saying what was found and what is dropped for it.
fn damage(accept: bool, recovered: &mut Recovered, error: WalError, dropped: String) -> Result<(), WalError> {
    if !accept {
        return Err(error);
    }
    recovered.dropped.push(format!("{error} -> {dropped}"));
    Ok(())
}

/// Whether a segment's bytes hold no record at all (a roll interrupted before
/// the manifest named it: a batch goes in only after that).
fn holds_no_record(bytes: &[u8]) -> bool {
    match scan_segment_prefix(bytes) {
        Ok((scan, _)) => scan.records.is_empty(),
        Err(_) => true,
    }
}

impl<S: Storage> Log<S> {
    /// Opens the log in `storage`, recovering what it holds; refuses damage.
    pub fn open(
        storage: S,
        segment_bytes: usize,
        salt: Box<dyn FnMut() -> u64 + Send>,
    ) -> Result<(Self, Recovered), WalError> {
        Log::open_with(storage, segment_bytes, salt, OpenOptions::default())
    }

    /// Opens the log in `storage`, recovering what it holds (module docs).
    pub fn open_with(
        mut storage: S,
        segment_bytes: usize,
        salt: Box<dyn FnMut() -> u64 + Send>,
        options: OpenOptions,
    ) -> Result<(Self, Recovered), WalError> {
        let accept = options.accept_data_loss;
        let mut ids = storage.list().map_err(|e| io_error("list", 0, e))?;
        let mut recovered = Recovered::default();
        let manifest = match storage.read_manifest().map_err(|e| io_error("read manifest", 0, e))? {
            None if ids.is_empty() => Some(Manifest::default()), // a new log
            None => {
                let newest = ids[ids.len() - 1];
                let legacy = match storage.open(newest).and_then(|mut f| f.read_all()) {
                    Ok(bytes) => decode_segment_header(&bytes).map_or(true, |h| h.segment_bytes == 0),
                    Err(e) => return Err(io_error("read", newest, e)),
                };
                if legacy {
                    recovered.notes.push("the log predates the WAL manifest; one is written now".into());
                } else {
                    let reason = format!("it is missing, yet segments {}..={newest} are present", ids[0]);
                    let what = "recovering without it: a deleted newest segment cannot be detected".to_string();
                    damage(accept, &mut recovered, WalError::Manifest { reason }, what)?;
                }
                None
            }
            Some(bytes) => {
                // Before anything else: a log of another format version is
                // refused as it is, never repaired or cut as damage.
                if let Some(found) = version_of(&bytes, &MANIFEST_MAGIC).filter(|&found| found != FORMAT_VERSION) {
                    return Err(WalError::Version { file: super::storage::MANIFEST_FILE.into(), found });
                }
                match decode_manifest(&bytes) {
                    Ok(manifest) => Some(manifest),
                    Err(reason) => {
                        let what = "recovering without it: a deleted newest segment cannot be detected".to_string();
                        damage(accept, &mut recovered, WalError::Manifest { reason: reason.into() }, what)?;
                        None
                    }
                }
            }
        };
        if let Some(manifest) = &manifest {
            let newest = manifest.newest_segment_id;
            // Segments newer than the manifest names never held a batch, unless damaged.
            while let Some(&id) = ids.last().filter(|&&id| id > newest) {
                let bytes = storage.open(id).and_then(|mut f| f.read_all()).map_err(|e| io_error("read", id, e))?;
                if let Some(found) = version_of(&bytes, &SEGMENT_MAGIC).filter(|&found| found != FORMAT_VERSION) {
                    return Err(WalError::Version { file: format!("{id:020}.wal"), found });
                }
                let newer = ids.iter().filter(|&&other| other > newest).count();
                if !(newer == 1 && id == newest + 1 && holds_no_record(&bytes)) {
                    let reason = format!(
                        "expected no segment after {newest:020}.wal (the newest the manifest names) but one that \
                         holds no record; found this one, with records"
                    );
                    damage(accept, &mut recovered, corruption(id, 0, reason), format!("segment {id} removed"))?;
                } else {
                    recovered.notes.push(format!(
                        "segment {id:020}.wal was being created when the server stopped; it held no batch and was removed"
                    ));
                }
                storage.remove(id).map_err(|e| io_error("remove", id, e))?;
                ids.pop();
            }
            if newest != 0 && ids.last() != Some(&newest) {
                let present = ids.last().map_or("none".to_string(), |id| format!("{id:020}.wal"));
                let reason = format!(
                    "expected it as the newest segment (the manifest names it, first LSN {}); found the newest \
                     present is {present}",
                    manifest.newest_first_lsn
                );
                let what = format!(
                    "every record from LSN {} on is lost (and any at the end of the segment before it)",
                    manifest.newest_first_lsn
                );
                damage(accept, &mut recovered, WalError::Missing { segment: newest, reason }, what)?;
            }
        }
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
            let (scan, error) = match scan_segment_prefix(&bytes) {
                Ok(found) => found,
                Err(FormatError::SegmentHeader(_))
                    if manifest.is_none()
                        && last
                        && (bytes.len() < SEGMENT_HEADER_BYTES || bytes.iter().all(|&b| b == 0)) =>
                {
                    // An older log (no manifest): its creation was interrupted
                    // before the header was durable; it never held a batch.
                    log.storage.remove(id).map_err(|e| io_error("remove", id, e))?;
                    recovered
                        .notes
                        .push(format!("segment {id:020}.wal was all zeros (an interrupted creation); removed"));
                    break;
                }
                Err(FormatError::Version { found }) => {
                    return Err(WalError::Version { file: format!("{id:020}.wal"), found });
                }
                Err(error) => {
                    let what = log.describe_dropped(&ids[i..]);
                    damage(accept, &mut recovered, corruption(id, 0, error.to_string()), what)?;
                    log.remove_segments(&ids[i..])?;
                    break;
                }
            };
            let header = scan.header;
            let mut mismatch = None;
            if header.segment_id != id {
                mismatch = Some(format!("expected segment id {id} in its header; found {}", header.segment_id));
            } else if i > 0 && ids[i - 1] + 1 != id {
                mismatch = Some(format!(
                    "a gap: expected segment {:020}.wal after {:020}.wal; found this one next",
                    ids[i - 1] + 1,
                    ids[i - 1]
                ));
            } else if i > 0 && (header.first_lsn != log.next_lsn || header.first_batch_seq != log.next_batch_seq) {
                mismatch = Some(format!(
                    "expected it to start at LSN {} and batch {} (where the previous segment ends); found LSN {} and \
                     batch {}",
                    log.next_lsn, log.next_batch_seq, header.first_lsn, header.first_batch_seq
                ));
            } else if let Some(m) = manifest.as_ref().filter(|m| m.newest_segment_id == id) {
                if (m.newest_first_lsn, m.newest_salt) != (header.first_lsn, header.salt) {
                    mismatch = Some(format!(
                        "expected the newest segment the manifest names (first LSN {}, salt {:#x}); found first LSN \
                         {}, salt {:#x}",
                        m.newest_first_lsn, m.newest_salt, header.first_lsn, header.salt
                    ));
                }
            }
            if let Some(reason) = mismatch {
                let what = log.describe_dropped(&ids[i..]);
                damage(accept, &mut recovered, corruption(id, 0, reason), what)?;
                log.remove_segments(&ids[i..])?;
                break;
            }
            let mut error = error.map(|error| match error {
                FormatError::Corruption { offset, reason } => corruption(id, offset, reason),
                FormatError::SegmentHeader(reason) => corruption(id, 0, reason),
                // `scan_segment_prefix` returns header errors as its own error (above).
                error @ FormatError::Version { .. } => corruption(id, 0, error.to_string()),
            });
            if error.is_none() && scan.torn_tail && !last {
                error = Some(corruption(
                    id,
                    scan.end_offset,
                    "expected a torn batch only at the end of the newest segment; found a damaged batch in a segment \
                     that later segments follow",
                ));
            }
            if let (None, true, Some(closed)) =
                (&error, scan.torn_tail, manifest.as_ref().and_then(|m| m.closed_at_lsn))
            {
                error = Some(corruption(
                    id,
                    scan.end_offset,
                    format!(
                        "the log was closed cleanly with every record up to LSN {closed} synced, so nothing can be \
                         torn; found a damaged batch"
                    ),
                ));
            }
            log.segments.push((id, header.first_lsn));
            recovered.records.extend(scan.records.iter().map(|r| (r.lsn, r.payload.to_vec())));
            log.next_lsn = scan.next_lsn;
            log.next_batch_seq = scan.next_batch_seq;
            log.end_offset = scan.end_offset;
            let cut = error.is_some();
            if let Some(error) = error {
                let mut what = format!(
                    "kept every record up to LSN {}; dropped everything in this segment from offset {} on",
                    log.next_lsn - 1,
                    scan.end_offset
                );
                if !last {
                    what += &format!("; {}", log.describe_dropped(&ids[i + 1..]));
                }
                damage(accept, &mut recovered, error, what)?;
                log.remove_segments(&ids[i + 1..])?;
            } else if let Some(torn) = &scan.torn {
                recovered.torn_tail = true;
                recovered.torn = Some(format!(
                    "segment {id:020}.wal, offset {}: {} bytes of batch {} (LSN {} on; {} of its records readable{})",
                    torn.offset,
                    torn.bytes,
                    torn.batch_seq,
                    torn.first_lsn,
                    torn.records_readable,
                    torn.body_len.map_or(String::new(), |n| format!(", body of {n} bytes"))
                ));
            }
            if cut || scan.torn_tail {
                // Zero what is dropped, to the size the header gives (which also
                // restores a segment cut short), and sync, so new batches go there.
                let size = (header.segment_bytes as usize).max(bytes.len());
                let zeros = vec![0u8; size - scan.end_offset];
                file.write_at(scan.end_offset as u64, &zeros).map_err(|e| io_error("zero the dropped tail", id, e))?;
                file.sync().map_err(|e| io_error("sync", id, e))?;
            }
            // Every segment becomes current in turn, so that when the last file
            // turns out to be an interrupted creation (removed above), the one
            // before it is written on and the next roll reuses the removed id.
            log.current = Some((file, header));
            if cut {
                break; // later segments were dropped with the damage
            }
        }
        if let Some(closed) = manifest.as_ref().and_then(|m| m.closed_at_lsn) {
            let end = log.next_lsn - 1;
            if end != closed {
                let reason = format!(
                    "the log was closed cleanly with its last record at LSN {closed}; expected it to end there, found \
                     it ends at LSN {end}"
                );
                let what = if end < closed {
                    format!("records {}..={closed} are lost", end + 1)
                } else {
                    "the records after it are kept".to_string()
                };
                damage(accept, &mut recovered, WalError::Manifest { reason }, what)?;
            }
        }
        // From here the log is open for writing: a crash can tear its end again.
        log.write_manifest(None)?;
        Ok((log, recovered))
    }

    /// What dropping the segments `ids` (a damaged one and those after it)
    /// loses, for `Recovered::dropped`.
    fn describe_dropped(&self, ids: &[u64]) -> String {
        let (Some(first), Some(last)) = (ids.first(), ids.last()) else { return String::new() };
        format!("segments {first:020}.wal..={last:020}.wal removed (every record from LSN {} on)", self.next_lsn)
    }

    /// Removes `ids` from storage (after [`Log::drop_segments`] described them).
    fn remove_segments(&mut self, ids: &[u64]) -> Result<(), WalError> {
        for &id in ids {
            self.storage.remove(id).map_err(|e| io_error("remove", id, e))?;
        }
        Ok(())
    }

    /// Rewrites the manifest: the current segment as the newest, and whether
    /// the log is closed cleanly (with its last LSN).
    fn write_manifest(&mut self, closed_at_lsn: Option<u64>) -> Result<(), WalError> {
        let manifest = match &self.current {
            Some((_, header)) => Manifest {
                newest_segment_id: header.segment_id,
                newest_first_lsn: header.first_lsn,
                newest_salt: header.salt,
                closed_at_lsn,
            },
            None => Manifest { closed_at_lsn, ..Manifest::default() },
        };
        self.storage
            .write_manifest(&encode_manifest(&manifest))
            .map_err(|e| io_error("write manifest", manifest.newest_segment_id, e))
    }

    /// Marks the log closed cleanly (every record written and synced): the next
    /// open then refuses any damage at its end instead of taking it for a tear.
    /// Does nothing on a poisoned log (its end may well be torn).
    pub fn close_cleanly(&mut self) -> Result<(), WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        self.write_manifest(Some(self.next_lsn - 1))
    }

    /// `--accept-data-loss` when the log cannot continue the checkpoint (it
    /// ends at or below it, or lacks the records right after it): removes every
    /// segment and starts the log afresh at `lsn` in a new segment.
    pub fn restart_at(&mut self, lsn: u64) -> Result<(), WalError> {
        let ids: Vec<u64> = self.segments.drain(..).map(|(id, _)| id).collect();
        self.current = None;
        self.remove_segments(&ids)?;
        self.next_lsn = lsn;
        self.roll()
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
        // Storage invariant: the batch is exactly as long as the space checked
        // for it above; a longer one would overrun the segment.
        assert_eq!(self.buffer.len(), batch_bytes, "an encoded WAL batch is not the size it was sized at");
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
            segment_bytes: self.segment_bytes as u64,
        };
        let bytes = encode_segment_header(&header);
        // Storage invariant: recovery must read back exactly this header.
        assert_eq!(decode_segment_header(&bytes).ok(), Some(header), "a WAL segment header does not decode to itself");
        match self.storage.create(id, self.segment_bytes, &bytes) {
            Ok(file) => {
                self.segments.push((id, header.first_lsn));
                self.current = Some((file, header));
                self.end_offset = SEGMENT_HEADER_BYTES;
                // Named by the manifest before any batch goes in: from here a
                // missing segment `id` is damage, not a crash.
                if let Err(error) = self.write_manifest(None) {
                    self.poisoned = true;
                    return Err(error);
                }
                Ok(())
            }
            Err(error) => {
                self.poisoned = true;
                Err(WalError::Io { operation: "create segment", segment: id, error })
            }
        }
    }
}
