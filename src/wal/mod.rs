//! The write-ahead log: `format` is the on-disk layout (segments, batches,
//! records, the manifest) and its checks, as pure functions;
//! `storage` the seam to the disk (real files, and a simulated disk that injects
//! faults); `log` the fail-stop writer and recovery; `committer` the group-commit
//! thread; `record` what a record holds.

pub mod committer;
pub mod format;
pub mod log;
pub mod record;
pub mod storage;
pub mod watermark;

#[cfg(test)]
pub(crate) mod log_tests;
#[cfg(test)]
mod tests;
