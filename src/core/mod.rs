//! The server's deterministic core: the parts of a request's path that own no
//! OS resource (no thread, socket, clock or file), so that the server's
//! threads drive them and the simulator (`crate::sim`) drives the very same
//! code. See docs/architecture.md, "The path of a request".

pub mod connections;
pub mod executor;
pub mod outbox;
pub mod replay;
