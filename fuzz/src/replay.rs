//! Replays every seed input (`corpus/<target>/`) and every input that once
//! crashed a target (`regressions/<target>/`) through the target's logic, so
//! that `cargo test` keeps them fixed without cargo-fuzz (docs/fuzzing.md).

use std::path::{Path, PathBuf};

use crate::TARGETS;

/// This crate's directory as the test runner says it now, not `env!`: a test
/// binary built in another clone sharing the target directory (tools/env.sh)
/// may be reused, and its compile-time path may no longer exist.
fn fuzz_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from)
}

/// The files directly in `dir` (none if it does not exist), sorted.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> =
        entries.map(|entry| entry.expect("a readable directory").path()).filter(|path| path.is_file()).collect();
    files.sort();
    files
}

/// Runs every file under `<kind>/<target>/` through its target; panics naming
/// each input that fails, after trying them all. Returns how many ran.
fn replay(kind: &str) -> usize {
    let mut failed = Vec::new();
    let mut count = 0;
    for (target, run) in TARGETS {
        for path in inputs(&fuzz_dir().join(kind).join(target)) {
            let data = std::fs::read(&path).expect("a readable input");
            count += 1;
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                failed.push(path.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "{} of {count} inputs failed:\n{}", failed.len(), failed.join("\n"));
    count
}

#[test]
fn regressions() {
    let count = replay("regressions");
    println!("{count} regression inputs replayed");
}

#[test]
fn corpus() {
    let count = replay("corpus");
    // Every target has seeds (a missing or misnamed directory would pass silently).
    for (target, _) in TARGETS {
        assert!(!inputs(&fuzz_dir().join("corpus").join(target)).is_empty(), "corpus/{target}/ has no seeds");
    }
    println!("{count} corpus inputs replayed");
}

/// A directory under corpus/ or regressions/ that names no target is a typo.
#[test]
fn directories_name_targets() {
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind)) else {
            continue;
        };
        for entry in entries {
            let entry = entry.expect("a readable directory");
            if !entry.path().is_dir() {
                continue; // a README
            }
            let name = entry.file_name();
            let name = name.to_string_lossy();
            assert!(
                name.starts_with('.') || TARGETS.iter().any(|(target, _)| *target == name),
                "{kind}/{name} is not a fuzz target"
            );
        }
    }
}
