//! The seam between the log and the disk, so tests can inject faults.
//!
//! [`DirStorage`] is the real thing: one preallocated, zero-filled file per
//! segment in a directory. [`SimStorage`] keeps files in memory and remembers
//! which writes have been synced, so a test can "crash" (keep a random subset of
//! the unsynced pages, as a real disk may) and inject sync errors, short writes
//! and a full disk.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};

/// What the log needs of one segment file.
pub trait SegmentFile {
    fn read_all(&mut self) -> io::Result<Vec<u8>>;
    /// Writes all of `bytes` at `offset`, or fails.
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Makes every write so far durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
}

/// What the log needs of the directory of segments.
pub trait Storage {
    type File: SegmentFile;
    /// Ids of the segments present, in increasing order.
    fn list(&mut self) -> io::Result<Vec<u64>>;
    /// Creates segment `id` of `bytes` bytes: zero-filled, `header` written at 0,
    /// synced, and its directory entry synced; only then may batches go in.
    fn create(&mut self, id: u64, bytes: usize, header: &[u8]) -> io::Result<Self::File>;
    fn open(&mut self, id: u64) -> io::Result<Self::File>;
    fn remove(&mut self, id: u64) -> io::Result<()>;
    /// The manifest's bytes (`format::Manifest`), or `None` if there is none.
    fn read_manifest(&mut self) -> io::Result<Option<Vec<u8>>>;
    /// Replaces the manifest atomically and durably: after a crash either the
    /// old or the new one is there, whole.
    fn write_manifest(&mut self, bytes: &[u8]) -> io::Result<()>;
}

/// The manifest's file name in the WAL directory.
pub const MANIFEST_FILE: &str = "MANIFEST";
/// Where a new manifest is written before it is renamed over the old one.
const MANIFEST_TEMPORARY_FILE: &str = "MANIFEST.tmp";
/// Mode of every file the log creates: only the server's user reads task data.
pub const WAL_FILE_MODE: u32 = 0o600;

/// Segments as files `<id, 20 digits>.wal` in a directory.
pub struct DirStorage {
    dir: PathBuf,
    sync_gate: Option<Arc<Mutex<File>>>,
}

/// A segment file of [`DirStorage`].
pub struct DirFile {
    file: File,
    sync_gate: Option<Arc<Mutex<File>>>,
}

impl DirStorage {
    pub fn new(dir: PathBuf) -> io::Result<DirStorage> {
        fs::create_dir_all(&dir)?;
        Ok(DirStorage { dir, sync_gate: None })
    }

    /// A test hook for the whole server (`tqx serve --debug-wal-sync-gate`):
    /// before each `fdatasync` of a batch, read one byte from `gate` (a FIFO the
    /// test holds), so a test can hold a sync open and see replies wait for it.
    pub fn with_sync_gate(dir: PathBuf, gate: &std::path::Path) -> io::Result<DirStorage> {
        let mut storage = DirStorage::new(dir)?;
        storage.sync_gate = Some(Arc::new(Mutex::new(File::open(gate)?)));
        Ok(storage)
    }

    fn file(&self, file: File) -> DirFile {
        DirFile { file, sync_gate: self.sync_gate.clone() }
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}.wal"))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

impl SegmentFile for DirFile {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.file.seek(SeekFrom::Start(0))?;
        self.file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        FileExt::write_all_at(&self.file, bytes, offset)
    }

    fn sync(&mut self) -> io::Result<()> {
        if let Some(gate) = &self.sync_gate {
            let mut byte = [0u8; 1];
            crate::sync::lock(gate).read_exact(&mut byte)?;
        }
        self.file.sync_data()
    }
}

/// Zero-filling writes in chunks of this size (a preallocated, zero-filled file
/// syncs ~35 % faster than one grown by appends, measured here; `fallocate`
/// alone leaves unwritten extents and gains nothing).
const ZERO_FILL_CHUNK_BYTES: usize = 1 << 20;

impl Storage for DirStorage {
    type File = DirFile;

    fn list(&mut self) -> io::Result<Vec<u64>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = name.strip_suffix(".wal").and_then(|stem| stem.parse::<u64>().ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn create(&mut self, id: u64, bytes: usize, header: &[u8]) -> io::Result<DirFile> {
        let mut file =
            OpenOptions::new().read(true).write(true).create_new(true).mode(WAL_FILE_MODE).open(self.path(id))?;
        let zeros = vec![0u8; ZERO_FILL_CHUNK_BYTES.min(bytes)];
        let mut written = 0;
        while written < bytes {
            let n = zeros.len().min(bytes - written);
            file.write_all(&zeros[..n])?;
            written += n;
        }
        FileExt::write_all_at(&file, header, 0)?;
        file.sync_all()?;
        self.sync_dir()?;
        Ok(self.file(file))
    }

    fn open(&mut self, id: u64) -> io::Result<DirFile> {
        Ok(self.file(OpenOptions::new().read(true).write(true).open(self.path(id))?))
    }

    fn remove(&mut self, id: u64) -> io::Result<()> {
        fs::remove_file(self.path(id))?;
        self.sync_dir()
    }

    fn read_manifest(&mut self) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.dir.join(MANIFEST_FILE)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn write_manifest(&mut self, bytes: &[u8]) -> io::Result<()> {
        let temporary = self.dir.join(MANIFEST_TEMPORARY_FILE);
        let mut file =
            OpenOptions::new().write(true).create(true).truncate(true).mode(WAL_FILE_MODE).open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, self.dir.join(MANIFEST_FILE))?;
        self.sync_dir()
    }
}

/// Pages a simulated crash keeps or loses independently.
pub const SIM_PAGE_BYTES: usize = 4096;

/// A simulated disk shared by [`SimStorage`] and its files.
#[derive(Default)]
pub struct SimDisk {
    /// Durable contents per segment.
    durable: BTreeMap<u64, Vec<u8>>,
    /// Contents as the process sees them (durable plus unsynced writes).
    visible: BTreeMap<u64, Vec<u8>>,
    /// The next `sync` calls fail after this many more succeed.
    pub syncs_until_failure: Option<usize>,
    /// Writes fail with "no space" once this many more bytes were written.
    pub bytes_until_full: Option<usize>,
    /// The next write stores only this many bytes, then reports an error.
    pub short_write_bytes: Option<usize>,
    /// When set, every sync waits at this gate (see [`SyncGate`]).
    pub sync_gate: Option<SyncGate>,
    /// The manifest (written atomically and durably, so one copy suffices).
    pub manifest: Option<Vec<u8>>,
    /// The next manifest writes fail (the old manifest stays).
    pub manifest_writes_fail: bool,
}

/// Lets a test hold a sync open and observe what waits for it, without
/// sleeping: each sync sends on `entered`, then waits for a token on `open`.
#[derive(Clone)]
pub struct SyncGate {
    pub entered: Sender<()>,
    pub open: Arc<Mutex<Receiver<()>>>,
}

impl SimDisk {
    /// The process dies: each unsynced page of each file survives or not, by
    /// `keep(segment, page)` (a seeded coin in tests).
    pub fn crash(&mut self, mut keep: impl FnMut(u64, usize) -> bool) {
        for (&id, visible) in &self.visible {
            let durable = self.durable.entry(id).or_default();
            durable.resize(visible.len(), 0);
            for page in 0..visible.len().div_ceil(SIM_PAGE_BYTES) {
                let range = page * SIM_PAGE_BYTES..((page + 1) * SIM_PAGE_BYTES).min(visible.len());
                if durable[range.clone()] != visible[range.clone()] && keep(id, page) {
                    durable[range.clone()].copy_from_slice(&visible[range]);
                }
            }
        }
        self.visible = self.durable.clone();
    }

    /// Flips one bit of a durable (and visible) file, as bit rot would.
    pub fn flip_bit(&mut self, id: u64, offset: usize, bit: u8) {
        for files in [&mut self.durable, &mut self.visible] {
            if let Some(bytes) = files.get_mut(&id) {
                bytes[offset] ^= 1 << bit;
            }
        }
    }

    pub fn segment_ids(&self) -> Vec<u64> {
        self.visible.keys().copied().collect()
    }

    /// Damage an operator or a bad disk may do to a stopped server's files
    /// (never a crash): `f` edits segment `id`'s durable bytes.
    pub fn damage(&mut self, id: u64, f: impl FnOnce(&mut Vec<u8>)) {
        if let Some(bytes) = self.durable.get_mut(&id) {
            f(bytes);
            self.visible.insert(id, bytes.clone());
        }
    }

    /// Deletes segment `id` outright (operator damage).
    pub fn delete(&mut self, id: u64) {
        self.durable.remove(&id);
        self.visible.remove(&id);
    }

    /// Durable bytes of segment `id`.
    pub fn bytes(&self, id: u64) -> Vec<u8> {
        self.durable.get(&id).cloned().unwrap_or_default()
    }
}

#[derive(Clone, Default)]
pub struct SimStorage {
    pub disk: Arc<Mutex<SimDisk>>,
}

impl SimStorage {
    /// The simulated disk.
    pub fn disk(&self) -> MutexGuard<'_, SimDisk> {
        crate::sync::lock(&self.disk)
    }
}

pub struct SimFile {
    storage: SimStorage,
    id: u64,
}

fn no_space() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

impl SegmentFile for SimFile {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        Ok(self.storage.disk().visible.get(&self.id).cloned().unwrap_or_default())
    }

    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut disk = self.storage.disk();
        let mut length = bytes.len();
        let mut error = None;
        if let Some(short) = disk.short_write_bytes.take() {
            length = short.min(length);
            error = Some(io::Error::other("short write (injected)"));
        }
        if let Some(left) = disk.bytes_until_full {
            if length > left {
                length = left;
                error = Some(no_space());
            }
            disk.bytes_until_full = Some(left - length);
        }
        let offset = offset as usize;
        let file = disk.visible.entry(self.id).or_default();
        if file.len() < offset + length {
            file.resize(offset + length, 0);
        }
        file[offset..offset + length].copy_from_slice(&bytes[..length]);
        error.map_or(Ok(()), Err)
    }

    fn sync(&mut self) -> io::Result<()> {
        let gate = self.storage.disk().sync_gate.clone();
        if let Some(gate) = gate {
            let _ = gate.entered.send(());
            let _ = crate::sync::lock(&gate.open).recv();
        }
        let mut disk = self.storage.disk();
        match disk.syncs_until_failure {
            Some(0) => return Err(io::Error::from_raw_os_error(libc::EIO)),
            Some(n) => disk.syncs_until_failure = Some(n - 1),
            None => {}
        }
        let visible = disk.visible.get(&self.id).cloned().unwrap_or_default();
        disk.durable.insert(self.id, visible);
        Ok(())
    }
}

impl Storage for SimStorage {
    type File = SimFile;

    fn list(&mut self) -> io::Result<Vec<u64>> {
        Ok(self.disk().segment_ids())
    }

    fn create(&mut self, id: u64, bytes: usize, header: &[u8]) -> io::Result<SimFile> {
        // Like `DirStorage` (create_new): a segment is never created twice.
        if self.disk().visible.contains_key(&id) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        let mut file = SimFile { storage: self.clone(), id };
        file.write_at(0, &vec![0u8; bytes])?;
        file.write_at(0, header)?;
        file.sync()?;
        Ok(file)
    }

    fn open(&mut self, id: u64) -> io::Result<SimFile> {
        if !self.disk().visible.contains_key(&id) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(SimFile { storage: self.clone(), id })
    }

    fn remove(&mut self, id: u64) -> io::Result<()> {
        let mut disk = self.disk();
        disk.visible.remove(&id);
        disk.durable.remove(&id);
        Ok(())
    }

    fn read_manifest(&mut self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.disk().manifest.clone())
    }

    fn write_manifest(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut disk = self.disk();
        if disk.manifest_writes_fail {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        disk.manifest = Some(bytes.to_vec());
        Ok(())
    }
}
