//! The lease key: the 128-bit secret lease tokens are keyed with
//! (`engine/jitter.rs`, SipHash-2-4 of seed, task id and attempt).
//!
//! It is made from the OS random source (`/dev/urandom`) at the first start on a
//! data directory and kept in `DATA/lease.key` (mode 0600), so that a restart
//! computes the same tokens and leases handed out before it stay valid. It is
//! deliberately **not** in the write-ahead log or the checkpoint store: those may
//! be copied around (backups, bug reports), and whoever holds the key can forge
//! any token. Replay gets it from here, through the engine's configuration.
//!
//! The file is written atomically (temporary file, `fsync`, rename, `fsync` of
//! the directory) before anything else in a new data directory, so no lease is
//! ever handed out under a key that a crash could lose. Its format is 32 bytes:
//! the magic `TQXLKEY1`, the key, and a SipHash-2-4 checksum of both (under the
//! all-zero key: it detects damage, it is not a secret).
//!
//! A data directory that holds state (a log or a checkpoint store) but no
//! readable key is refused at start: a new key would silently invalidate every
//! outstanding lease. `--regenerate-lease-key` makes a new one anyway (those
//! leases are then refused and their tasks delivered again once they expire).
//!
//! `--durability memory` keeps no state across starts, so it uses a fresh random
//! key per start and writes no file.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use crate::engine::LeaseKey;

/// The key file's name in the data directory.
pub(crate) const LEASE_KEY_FILE: &str = "lease.key";
const MAGIC: &[u8; 8] = b"TQXLKEY1";
/// Magic, key, checksum.
const FILE_BYTES: usize = 8 + 16 + 8;
/// Owner read and write only: the key lets its holder forge any lease token.
const FILE_MODE: u32 = 0o600;

/// A fresh key from the kernel's random source. Fails rather than fall back to
/// anything guessable.
pub(crate) fn random_key() -> std::io::Result<LeaseKey> {
    let mut key = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut key)?;
    Ok(LeaseKey(key))
}

fn checksum(magic_and_key: &[u8]) -> [u8; 8] {
    crate::engine::siphash24(&[0; 16], magic_and_key).to_le_bytes()
}

fn encode(key: &LeaseKey) -> [u8; FILE_BYTES] {
    let mut bytes = [0u8; FILE_BYTES];
    bytes[..8].copy_from_slice(MAGIC);
    bytes[8..24].copy_from_slice(&key.0);
    let sum = checksum(&bytes[..24]);
    bytes[24..].copy_from_slice(&sum);
    bytes
}

/// The key in `bytes`, or what is wrong with them.
fn decode(bytes: &[u8]) -> Result<LeaseKey, String> {
    if bytes.len() != FILE_BYTES {
        return Err(format!("it is {} bytes long, expected {FILE_BYTES}", bytes.len()));
    }
    if &bytes[..8] != MAGIC {
        return Err("it does not begin with TQXLKEY1".into());
    }
    if bytes[24..] != checksum(&bytes[..24]) {
        return Err("its checksum does not match (the file is damaged)".into());
    }
    let mut key = [0u8; 16];
    key.copy_from_slice(&bytes[8..24]);
    Ok(LeaseKey(key))
}

/// Writes `key` to `dir/lease.key` atomically and durably.
fn write_atomically(dir: &Path, key: &LeaseKey) -> std::io::Result<()> {
    let path = dir.join(LEASE_KEY_FILE);
    let temporary = dir.join(format!("{LEASE_KEY_FILE}.tmp"));
    // Left by a crash during an earlier write: never the key in use.
    let _ = fs::remove_file(&temporary);
    let mut file = OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(&temporary)?;
    file.write_all(&encode(key))?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, &path)?;
    // The rename is durable only once the directory is.
    File::open(dir)?.sync_all()
}

/// Whether `data_dir` holds state a key may already have signed leases for:
/// a write-ahead log with any file in it, or a checkpoint store.
fn holds_state(data_dir: &Path) -> bool {
    let wal_has_files = fs::read_dir(data_dir.join("wal")).is_ok_and(|mut entries| entries.next().is_some());
    wal_has_files || data_dir.join("store").exists()
}

/// The key of `data_dir`: read from `lease.key`, or made and written there on
/// a data directory that holds no state yet (or, with `regenerate`, in place of
/// a missing or damaged one). Call before the log or the store is created.
pub(crate) fn load_or_create(data_dir: &Path, regenerate: bool) -> Result<LeaseKey, String> {
    let path = data_dir.join(LEASE_KEY_FILE);
    let problem = match fs::read(&path) {
        Ok(bytes) => match decode(&bytes) {
            Ok(key) => {
                tighten_mode(&path);
                return Ok(key);
            }
            Err(problem) => problem,
        },
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => "it does not exist".to_string(),
        Err(error) => return Err(format!("cannot read the lease key {}: {error}", path.display())),
    };
    let exists = path.exists();
    if holds_state(data_dir) && !regenerate {
        return Err(format!(
            "the lease key {} is unusable ({problem}), but {} holds a write-ahead log or checkpoint: a new key \
             would invalidate every outstanding lease. Restore the file, or start with --regenerate-lease-key \
             to make a new one (outstanding leases are then refused, and their tasks delivered again once the \
             leases expire)",
            path.display(),
            data_dir.display()
        ));
    }
    let key = random_key().map_err(|e| format!("cannot read /dev/urandom for a new lease key: {e}"))?;
    write_atomically(data_dir, &key).map_err(|e| format!("cannot write the lease key {}: {e}", path.display()))?;
    if exists || holds_state(data_dir) {
        tracing::warn!(file = %path.display(), %problem, "made a new lease key (--regenerate-lease-key): outstanding leases are refused");
    } else {
        tracing::info!(file = %path.display(), "made a new lease key");
    }
    Ok(key)
}

/// A key file readable by others (copied in with a wide umask, say) is made
/// private again, with a warning: whoever can read it can forge leases.
fn tighten_mode(path: &Path) {
    let Ok(metadata) = fs::metadata(path) else { return };
    if metadata.permissions().mode() & 0o077 != 0 {
        tracing::warn!(file = %path.display(), "the lease key was readable by others; setting its mode to 0600");
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(FILE_MODE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_round_trips_and_damage_is_detected() {
        let key = LeaseKey(std::array::from_fn(|i| (i * 7) as u8));
        let bytes = encode(&key);
        assert_eq!(decode(&bytes), Ok(key));
        assert!(decode(&bytes[..16]).is_err());
        for i in 0..FILE_BYTES {
            let mut damaged = bytes;
            damaged[i] ^= 0x10;
            assert!(decode(&damaged).is_err(), "flip in byte {i} not detected");
        }
    }

    #[test]
    fn random_keys_differ() {
        assert_ne!(random_key().unwrap(), random_key().unwrap());
    }
}
