//! The TaskQueueX binary wire protocol.
//!
//! Empty for now: the frame layout, codecs and golden vectors arrive with the
//! wire-protocol issue. See `wire/README.md`.
