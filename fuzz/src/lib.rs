//! The logic of every fuzz target, as plain functions over bytes.
//!
//! Each module's `run(data)` is what its fuzz target (`fuzz_targets/<name>.rs`)
//! calls on every input: it drives the server's code the way the server does and
//! panics when a property fails. The same functions replay the seed corpora
//! (`corpus/<name>/`) and every crash ever found (`regressions/<name>/`) in
//! [`replay`]'s tests, so `cargo test --release --lib` checks them without
//! cargo-fuzz or a nightly compiler (docs/fuzzing.md).

pub mod connection;
pub mod http_request;
pub mod json_command;
pub mod replies;
pub mod response;
pub mod wire_frame;

/// What a fuzz target does with one input (panics when a property fails).
pub type Target = fn(&[u8]);

/// The fuzz targets, by name (the names of `fuzz_targets/*.rs` and of the
/// directories under `corpus/` and `regressions/`).
pub const TARGETS: [(&str, Target); 4] = [
    ("wire_frame", wire_frame::run),
    ("http_request", http_request::run),
    ("json_command", json_command::run),
    ("connection", connection::run),
];

#[cfg(test)]
mod replay;
