//! The frame header and the framing step: where a frame ends, before any body
//! is decoded.

use bytes::{Bytes, BytesMut};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The first two bytes of every frame: `TQ`.
pub const MAGIC: [u8; 2] = *b"TQ";
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Size of [`Header`] on the wire.
pub const HEADER_BYTES: usize = 24;
/// Set in `flags` on every frame the server sends.
pub const FLAG_REPLY: u16 = 1;

/// Every frame starts with this header (little-endian, no padding).
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 2 | `magic` = `TQ` |
/// | 2 | 1 | `version` = 1 |
/// | 3 | 1 | `opcode` |
/// | 4 | 2 | `flags` (bit 0: reply; other bits 0) |
/// | 6 | 2 | `status` (replies: 0 = ok, else an [`crate::ErrorCode`]; requests: 0) |
/// | 8 | 4 | `body_len` |
/// | 12 | 4 | `reserved` = 0 |
/// | 16 | 8 | `request_id` (chosen by the client, echoed in the reply) |
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Header {
    pub magic: [u8; 2],
    pub version: u8,
    pub opcode: u8,
    pub flags: U16,
    pub status: U16,
    pub body_len: U32,
    pub reserved: U32,
    pub request_id: U64,
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_BYTES);

impl Header {
    pub fn new(opcode: u8, flags: u16, status: u16, body_len: u32, request_id: u64) -> Header {
        Header {
            magic: MAGIC,
            version: VERSION,
            opcode,
            flags: U16::new(flags),
            status: U16::new(status),
            body_len: U32::new(body_len),
            reserved: U32::new(0),
            request_id: U64::new(request_id),
        }
    }

    pub fn is_reply(&self) -> bool {
        self.flags.get() & FLAG_REPLY != 0
    }
}

/// A framing error: the stream cannot be trusted past this point, so the
/// receiver answers with one error frame and closes the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The first two bytes are not `TQ`.
    BadMagic([u8; 2]),
    /// `body_len` is over the receiver's limit.
    TooLarge { body_len: u64, limit: usize },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::BadMagic(m) => write!(f, "bad magic {:02x}{:02x} (expected 5451, \"TQ\")", m[0], m[1]),
            FrameError::TooLarge { body_len, limit } => {
                write!(f, "frame body of {body_len} bytes is over the limit of {limit} bytes")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Looks at the start of `buffer`: `Ok(None)` while fewer than
/// [`HEADER_BYTES`] + `body_len` bytes are present (read more), `Ok(Some(header))`
/// when a whole frame of `HEADER_BYTES + header.body_len` bytes is there.
/// Checks the magic as soon as two bytes are present and the length as soon as
/// the header is, so a hostile peer is refused before it sends a large body.
/// A version other than [`VERSION`] is *not* a framing error (the length can
/// still be trusted): the caller answers `unsupported_version` and goes on.
pub fn peek_frame(buffer: &[u8], body_bytes_max: usize) -> Result<Option<Header>, FrameError> {
    if buffer.len() >= 2 && buffer[..2] != MAGIC {
        return Err(FrameError::BadMagic([buffer[0], buffer[1]]));
    }
    let Ok((header, _)) = Header::read_from_prefix(buffer) else {
        return Ok(None);
    };
    let body_len = header.body_len.get() as usize;
    if body_len > body_bytes_max {
        return Err(FrameError::TooLarge { body_len: body_len as u64, limit: body_bytes_max });
    }
    if buffer.len() - HEADER_BYTES < body_len {
        return Ok(None);
    }
    Ok(Some(header))
}

/// [`peek_frame`], then, when a whole frame is there, splits it off the front of
/// `buffer`: the header, and the body as `Bytes` (no copy), ready for
/// [`crate::Request::decode`] or [`crate::Response::decode`].
pub fn take_frame(buffer: &mut BytesMut, body_bytes_max: usize) -> Result<Option<(Header, Bytes)>, FrameError> {
    let Some(header) = peek_frame(buffer, body_bytes_max)? else {
        return Ok(None);
    };
    // `peek_frame` returned a header only because the whole frame is present.
    let frame_bytes = HEADER_BYTES + header.body_len.get() as usize;
    let mut frame = buffer.split_to(frame_bytes);
    let body = frame.split_off(HEADER_BYTES).freeze();
    Ok(Some((header, body)))
}
