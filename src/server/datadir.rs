//! The data directory: owner-only permissions, and one server at a time.
//!
//! `serve()` calls [`claim`] before anything else — before binding, before
//! printing `listening`, before RocksDB or the log open a file — so a second
//! server pointed at a directory in use stops with one line naming the holder's
//! pid and touches nothing (RocksDB's own LOCK used to fail only after the
//! second server listened, and its start had already renamed RocksDB's `LOG`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The data directory's mode: only the server's user may list or enter it.
pub const DATA_DIR_MODE: u32 = 0o700;
/// The process umask while serving, set explicitly at start: every file and
/// directory created afterwards — WAL segments and manifest (which also ask for
/// 0600 themselves), RocksDB's SST, MANIFEST, OPTIONS and LOG files (RocksDB
/// creates them 0644 and has no option to change that) — is at most 0600 / 0700.
/// Task payloads are client data; nobody else on the machine may read them.
pub const SERVE_UMASK: libc::mode_t = 0o077;
/// The lock file in the data directory: holds the serving process's pid, and
/// an exclusive `flock` while it runs (released by the kernel when the process
/// ends, however it ends, so a stale file never blocks a restart).
pub const LOCK_FILE: &str = "tqx.lock";

/// Held for as long as the server runs: the `flock` lives with the descriptor.
pub(crate) struct DataDirLock {
    _file: File,
}

/// Why the data directory cannot be used.
#[derive(Debug)]
pub enum DataDirError {
    /// Another process holds the lock: its pid, if the lock file names one.
    InUse {
        dir: PathBuf,
        pid: Option<u32>,
    },
    Io {
        dir: PathBuf,
        error: io::Error,
    },
}

impl std::fmt::Display for DataDirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataDirError::InUse { dir, pid: Some(pid) } => write!(
                f,
                "the data directory {} is in use by another tqx server (pid {pid}); stop it or pick another --data",
                dir.display()
            ),
            DataDirError::InUse { dir, pid: None } => write!(
                f,
                "the data directory {} is in use by another process (it holds {LOCK_FILE}); stop it or pick another \
                 --data",
                dir.display()
            ),
            DataDirError::Io { dir, error } => write!(f, "cannot use the data directory {}: {error}", dir.display()),
        }
    }
}

/// Sets the umask, creates `dir` if needed, takes its lock (or reports who
/// holds it, changing nothing), then makes `dir` 0700 and writes our pid.
pub(crate) fn claim(dir: &Path) -> Result<DataDirLock, DataDirError> {
    let io_error = |error| DataDirError::Io { dir: dir.to_path_buf(), error };
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(SERVE_UMASK);
    }
    fs::DirBuilder::new().recursive(true).mode(DATA_DIR_MODE).create(dir).map_err(io_error)?;
    // Opening (creating if absent) the lock file changes nothing another server
    // relies on: not truncated here (the holder's pid is read below), only once
    // the lock is ours.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join(LOCK_FILE))
        .map_err(io_error)?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut text = String::new();
            let pid = file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
            return Err(DataDirError::InUse { dir: dir.to_path_buf(), pid });
        }
        return Err(io_error(error));
    }
    // Ours now. An existing directory keeps whatever mode it had unless we set it.
    fs::set_permissions(dir, fs::Permissions::from_mode(DATA_DIR_MODE)).map_err(io_error)?;
    let pid = format!("{}\n", std::process::id());
    file.set_len(0).map_err(io_error)?;
    file.write_all_at(pid.as_bytes(), 0).map_err(io_error)?;
    Ok(DataDirLock { _file: file })
}
