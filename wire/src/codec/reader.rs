//! A bounds-checked cursor over one frame's body. Every read checks the bytes
//! left first and names the field it was reading in its error, so the decoders
//! above it contain no slicing, no arithmetic on untrusted lengths and no
//! `unwrap`: this file is where totality is argued.

use std::fmt;

use bytes::Bytes;
use zerocopy::IntoBytes;

use super::layout::Fixed;
use crate::error::DecodeError;

/// Which field a read or a check is about, for error messages
/// (`tasks[3].payload`, `task.group`, `queue`). Copy and allocation-free, so a
/// decoder that succeeds never formats it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Field {
    /// The enclosing part (`tasks`, `task`, `queues`), or "" at the top level.
    pub(crate) part: &'static str,
    /// The item's index when `part` is a list.
    pub(crate) index: Option<usize>,
    /// The field inside the part, or "" for the item itself.
    pub(crate) name: &'static str,
}

impl Field {
    /// The body's fixed part.
    pub(crate) const FIXED: Field = Field::top("");

    pub(crate) const fn top(name: &'static str) -> Field {
        Field { part: "", index: None, name }
    }

    pub(crate) const fn inside(part: &'static str, index: Option<usize>, name: &'static str) -> Field {
        Field { part, index, name }
    }

    /// The same part, another field of it.
    pub(crate) const fn with(self, name: &'static str) -> Field {
        Field { name, ..self }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.part.is_empty() && self.name.is_empty() {
            return f.write_str("the fixed part");
        }
        f.write_str(self.part)?;
        if let Some(index) = self.index {
            write!(f, "[{index}]")?;
        }
        if !self.part.is_empty() && !self.name.is_empty() {
            f.write_str(".")?;
        }
        f.write_str(self.name)
    }
}

/// Widens a length or count read from the wire. Lossless: the crate refuses to
/// build where `usize` is narrower than 32 bits.
pub(crate) fn widen(value: u32) -> usize {
    const _: () = assert!(usize::BITS >= u32::BITS);
    value as usize
}

pub(crate) struct Reader<'a> {
    body: &'a Bytes,
    position: usize,
    /// What is being decoded (`enqueue`, `dequeue reply`), the start of every
    /// error message.
    context: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(body: &'a Bytes, context: &'static str) -> Reader<'a> {
        Reader { body, position: 0, context }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.body.len() - self.position
    }

    pub(crate) fn malformed(&self, message: fmt::Arguments<'_>) -> DecodeError {
        DecodeError::malformed(format!("{}: {}", self.context, message))
    }

    fn ends_inside(&self, field: Field) -> DecodeError {
        self.malformed(format_args!("body ends inside {field}"))
    }

    /// Takes the next `len` bytes, or fails if fewer are left.
    fn take(&mut self, len: usize, field: Field) -> Result<&'a [u8], DecodeError> {
        let body: &'a Bytes = self.body;
        let Some(bytes) = body.get(self.position..).and_then(|rest| rest.get(..len)) else {
            return Err(self.ends_inside(field));
        };
        self.position += len;
        Ok(bytes)
    }

    /// The next fixed part, read in place (a reference into the body).
    pub(crate) fn fixed<T: Fixed>(&mut self, field: Field) -> Result<&'a T, DecodeError> {
        let bytes = self.take(std::mem::size_of::<T>(), field)?;
        // `T` is `Unaligned` and the slice has exactly its size, so this cannot
        // fail; the error path is kept rather than an `unwrap` on input.
        T::ref_from_bytes(bytes).map_err(|_| self.ends_inside(field))
    }

    /// The next `len` bytes as a slice of the body: no copy.
    pub(crate) fn bytes(&mut self, len: usize, field: Field) -> Result<Bytes, DecodeError> {
        let start = self.position;
        self.take(len, field)?;
        Ok(self.body.slice(start..self.position))
    }

    /// The next `len` bytes, which must be UTF-8.
    pub(crate) fn string(&mut self, len: usize, field: Field) -> Result<String, DecodeError> {
        let bytes = self.take(len, field)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_owned()),
            Err(e) => Err(self.malformed(format_args!("{field} is not valid UTF-8 (at byte {})", e.valid_up_to()))),
        }
    }

    /// A string whose length 0 means "absent".
    pub(crate) fn string_or_none(&mut self, len: usize, field: Field) -> Result<Option<String>, DecodeError> {
        if len == 0 {
            return Ok(None);
        }
        self.string(len, field).map(Some)
    }

    /// Checks that `count` items of at least `item_bytes_min` bytes each can fit
    /// in what is left, before the caller reserves room for them: a tiny body
    /// with a huge count fails here instead of allocating.
    pub(crate) fn check_count(&self, count: usize, item_bytes_min: usize, field: Field) -> Result<usize, DecodeError> {
        let needed_bytes = (count as u128) * (item_bytes_min as u128);
        if needed_bytes > self.remaining() as u128 {
            return Err(self.malformed(format_args!(
                "{field} count {count} needs at least {needed_bytes} bytes but only {} are left",
                self.remaining()
            )));
        }
        Ok(count)
    }

    /// Reserved bytes must be 0.
    pub(crate) fn reserved<T: IntoBytes + zerocopy::Immutable + ?Sized>(
        &self,
        value: &T,
        field: Field,
    ) -> Result<(), DecodeError> {
        if value.as_bytes().iter().all(|&b| b == 0) {
            Ok(())
        } else {
            Err(self.malformed(format_args!("reserved bytes of {field} are not 0")))
        }
    }

    /// A boolean byte: 0 or 1.
    pub(crate) fn boolean(&self, value: u8, field: Field) -> Result<bool, DecodeError> {
        match value {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.malformed(format_args!("{field} is {other}, expected 0 or 1"))),
        }
    }

    /// Flag bits outside `known` must be 0.
    pub(crate) fn flags(&self, value: u64, known: u64, field: Field) -> Result<(), DecodeError> {
        let unknown = value & !known;
        if unknown == 0 {
            Ok(())
        } else {
            Err(self.malformed(format_args!("{field} has unknown bits {unknown:#x}")))
        }
    }

    /// A field whose presence bit is clear must be 0.
    pub(crate) fn absent_is_zero(&self, value: u64, field: Field) -> Result<(), DecodeError> {
        if value == 0 {
            Ok(())
        } else {
            Err(self.malformed(format_args!("{field} is {value} but its presence bit is clear (must be 0)")))
        }
    }

    /// The body must end where the last part ends.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(self.malformed(format_args!("{extra} trailing bytes after the last part"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::layout::IdRequest;
    use crate::ErrorCode;

    #[test]
    fn field_names_read_like_paths() {
        assert_eq!(Field::top("queue").to_string(), "queue");
        assert_eq!(Field::FIXED.to_string(), "the fixed part");
        assert_eq!(Field::inside("task", None, "payload").to_string(), "task.payload");
        assert_eq!(Field::inside("tasks", Some(3), "payload").to_string(), "tasks[3].payload");
        assert_eq!(Field::inside("queues", Some(0), "").to_string(), "queues[0]");
    }

    #[test]
    fn reads_past_the_end_fail_and_do_not_move() {
        let body = Bytes::from_static(&[1, 2, 3]);
        let mut reader = Reader::new(&body, "test");
        let error = reader.fixed::<IdRequest>(Field::top("id")).unwrap_err();
        assert_eq!(error.code, ErrorCode::MalformedRequest);
        assert_eq!(error.message, "test: body ends inside id");
        assert_eq!(reader.remaining(), 3);
        assert_eq!(reader.bytes(2, Field::top("x")).unwrap(), Bytes::from_static(&[1, 2]));
        assert!(reader.bytes(2, Field::top("y")).is_err());
        assert!(reader.bytes(usize::MAX, Field::top("z")).is_err());
        assert_eq!(reader.remaining(), 1);
        assert_eq!(reader.finish().unwrap_err().message, "test: 1 trailing bytes after the last part");
    }

    #[test]
    fn counts_are_checked_against_the_bytes_left_without_overflow() {
        let body = Bytes::from_static(&[0; 16]);
        let reader = Reader::new(&body, "test");
        assert_eq!(reader.check_count(2, 8, Field::top("ids")).unwrap(), 2);
        assert!(reader.check_count(3, 8, Field::top("ids")).is_err());
        assert!(reader.check_count(usize::MAX, usize::MAX, Field::top("ids")).is_err());
        assert_eq!(reader.check_count(usize::MAX, 0, Field::top("ids")).unwrap(), usize::MAX);
    }

    #[test]
    fn strings_must_be_utf8() {
        let body = Bytes::from_static(&[b'o', b'k', 0xff]);
        let mut reader = Reader::new(&body, "test");
        assert_eq!(reader.string(2, Field::top("a")).unwrap(), "ok");
        let error = reader.string(1, Field::top("b")).unwrap_err();
        assert_eq!(error.message, "test: b is not valid UTF-8 (at byte 0)");
    }
}
