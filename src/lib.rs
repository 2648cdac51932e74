//! TaskQueueX: a durable, low-latency task-queue server.
//!
//! See `docs/architecture.md` for the map. Today the crate holds the engine;
//! the network server, the write-ahead log and the metrics arrive with later issues.

pub mod binary;
#[cfg(feature = "server")]
pub mod cli;
pub mod command;
pub mod core;
pub mod engine;
pub mod http;
pub mod limits;
#[cfg(feature = "server")]
pub mod server;
pub mod sim;
#[cfg(feature = "server")]
pub mod store;
pub mod sync;
pub mod wal;
