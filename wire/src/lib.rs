//! The TaskQueueX binary wire protocol: frames, opcodes, message bodies and
//! their codecs. `docs/wire.md` is the byte-exact specification; this crate is
//! its reference implementation and holds the golden vectors (`wire/golden/`).
//!
//! A frame is a fixed 24-byte little-endian [`Header`] followed by `body_len`
//! body bytes. Each body is a fixed-layout part (declared with `zerocopy`, read
//! in place from the receive buffer) followed by variable parts whose lengths
//! the fixed part gives. Payloads and results decode to `Bytes` slices of the
//! frame's buffer: no second copy.
//!
//! The decoder is total: any input gives a value or a typed error, never a
//! panic, a loop, or an allocation larger than the frame (counts are checked
//! against the bytes actually present before anything is reserved).

mod codec;
mod error;
mod frame;
mod message;

pub use error::{DecodeError, EncodeError, ErrorCode};
pub use frame::{peek_frame, take_frame, FrameError, Header, FLAG_REPLY, HEADER_BYTES, MAGIC, VERSION};
pub use message::{
    CompleteItem, CompleteOutcome, Dep, Discipline, Enqueued, LeasedTask, Opcode, QueueInfo, QueuePatch, Request,
    Response, Secret, TaskSpec, TaskState, TaskView, SCOPES_ALL, SCOPE_ADMIN, SCOPE_CONSUME, SCOPE_PRODUCE,
};

/// Largest body a peer may send unless the server says otherwise in its hello
/// reply (the server uses its `--max-body-bytes`, also 1 MiB by default).
pub const FRAME_BODY_BYTES_MAX_DEFAULT: usize = 1 << 20;
