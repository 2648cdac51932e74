//! TaskQueueX: a durable, low-latency task-queue server.
//!
//! See `docs/architecture.md` for the map: the engine, the deterministic core
//! a request passes through (`core`), the write-ahead log (`wal`), the
//! protocols (`http`, `binary`), the simulator (`sim`) and, with the `server`
//! feature, the server, its checkpoint store and the `tqx` command line.

pub mod auth;
pub mod binary;
#[cfg(feature = "server")]
pub mod cli;
pub mod command;
pub mod core;
pub mod engine;
pub mod http;
pub mod limits;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod server;
pub mod sim;
#[cfg(feature = "server")]
pub mod store;
pub mod sync;
pub mod wal;
