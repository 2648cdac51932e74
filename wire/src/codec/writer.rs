//! Appends one frame to an output buffer: a header placeholder, the body parts,
//! then the header with the body's length; or a body alone (the write-ahead log
//! stores request bodies without a frame header). Lengths are converted to their
//! field widths with checks, never with `as`, so a value that does not fit is an
//! [`EncodeError`] instead of a frame whose lengths lie.

use zerocopy::little_endian::{U16, U32};
use zerocopy::IntoBytes;

use super::layout::Fixed;
use super::reader::Field;
use crate::error::EncodeError;
use crate::frame::{Header, HEADER_BYTES};

pub(crate) struct Writer<'a> {
    out: &'a mut Vec<u8>,
    /// Where this frame's header starts in `out` (`None`: a body alone).
    header_at: Option<usize>,
    /// What is being encoded (`enqueue`, `dequeue reply`), for error messages.
    context: &'static str,
}

impl<'a> Writer<'a> {
    /// A frame: room for the header now, the header itself at [`Writer::finish`].
    pub(crate) fn begin(out: &'a mut Vec<u8>, context: &'static str) -> Writer<'a> {
        let start = out.len();
        out.resize(start + HEADER_BYTES, 0);
        Writer { out, header_at: Some(start), context }
    }

    /// A body alone, with no header (nothing to finish).
    pub(crate) fn body(out: &'a mut Vec<u8>, context: &'static str) -> Writer<'a> {
        Writer { out, header_at: None, context }
    }

    pub(crate) fn fixed<T: Fixed>(&mut self, part: &T) {
        self.out.extend_from_slice(part.as_bytes());
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    fn too_long(&self, field: Field, len: usize, max: u64) -> EncodeError {
        EncodeError { message: format!("{}: {field} is {len} long, at most {max} fit its length field", self.context) }
    }

    pub(crate) fn error(&self, message: std::fmt::Arguments<'_>) -> EncodeError {
        EncodeError { message: format!("{}: {message}", self.context) }
    }

    /// A length or count for a U16 field.
    pub(crate) fn u16_len(&self, len: usize, field: Field) -> Result<U16, EncodeError> {
        u16::try_from(len).map(U16::new).map_err(|_| self.too_long(field, len, u16::MAX.into()))
    }

    /// A length or count for a U32 field.
    pub(crate) fn u32_len(&self, len: usize, field: Field) -> Result<U32, EncodeError> {
        u32::try_from(len).map(U32::new).map_err(|_| self.too_long(field, len, u32::MAX.into()))
    }

    /// A value (not a length) for a U32 field.
    pub(crate) fn u32_value(&self, value: u64, field: Field) -> Result<U32, EncodeError> {
        u32::try_from(value)
            .map(U32::new)
            .map_err(|_| self.error(format_args!("{field} is {value}, at most {} fit its 32-bit field", u32::MAX)))
    }

    /// Writes the header in front of the body. On error the caller truncates
    /// `out` back to where the frame began.
    pub(crate) fn finish(self, opcode: u8, flags: u16, status: u16, request_id: u64) -> Result<(), EncodeError> {
        let start = self.header_at.expect("finish is for a writer begun as a frame");
        let body_bytes = self.out.len() - start - HEADER_BYTES;
        let body_len = self.u32_len(body_bytes, Field::top("body"))?;
        let header = Header::new(opcode, flags, status, body_len.get(), request_id);
        self.out[start..start + HEADER_BYTES].copy_from_slice(header.as_bytes());
        Ok(())
    }
}
