//! Byte layouts of every body (docs/wire.md), encoders and total decoders.
//!
//! - `layout`: the fixed part of every body as a `zerocopy` struct.
//! - `reader`: the bounds-checked cursor every decoder reads through.
//! - `writer`: appends a frame, converting lengths to their field widths with checks.
//! - `request`, `response`: one encoder and one decoder per body.
//!
//! Decoding is strict: a body has exactly one accepted encoding (reserved bytes,
//! unknown flag bits and absent values are 0, booleans are 0 or 1, nothing
//! trails the last part), so every frame the decoder accepts re-encodes to the
//! same bytes, and a later version can give meaning to any of those bits
//! without an old peer silently misreading it.

mod layout;
mod reader;
mod request;
mod response;
mod writer;

use bytes::Bytes;

use crate::error::{DecodeError, EncodeError, ErrorCode};
use crate::frame::{Header, FLAG_REPLY, MAGIC, VERSION};
use crate::message::{Opcode, Request, Response};
use writer::Writer;

pub(crate) fn encode_request(request: &Request, request_id: u64, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let opcode = request.opcode();
    let start = out.len();
    let mut writer = Writer::begin(out, opcode.name());
    let result = request::encode(request, &mut writer).and_then(|()| writer.finish(opcode as u8, 0, 0, request_id));
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// The body of [`encode_request`]'s frame, without the header: the same
/// encoder, so a frame's body and this are the same bytes.
pub(crate) fn encode_request_body(request: &Request, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    let mut writer = Writer::body(out, request.opcode().name());
    let result = request::encode(request, &mut writer);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

pub(crate) fn decode_request(header: &Header, body: Bytes) -> Result<Request, DecodeError> {
    check_version(header)?;
    let opcode = Opcode::from_u8(header.opcode).ok_or_else(|| unknown_opcode(header.opcode))?;
    let context = opcode.name();
    check_common(header, &body, context)?;
    if header.flags.get() != 0 {
        return Err(DecodeError::malformed(format!(
            "{context}: header.flags must be 0 in a request (got {:#06x})",
            header.flags.get()
        )));
    }
    if header.status.get() != 0 {
        return Err(DecodeError::malformed(format!(
            "{context}: header.status must be 0 in a request (got {})",
            header.status.get()
        )));
    }
    decode_request_body(opcode, &body)
}

/// A request body on its own: what [`decode_request`] does once the header is
/// checked (the header's opcode chooses the layout).
pub(crate) fn decode_request_body(opcode: Opcode, body: &Bytes) -> Result<Request, DecodeError> {
    request::decode(opcode, body)
}

pub(crate) fn encode_response(
    response: &Response,
    opcode: u8,
    request_id: u64,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let context = Opcode::from_u8(opcode).map_or("reply", response::context);
    let start = out.len();
    let mut writer = Writer::begin(out, context);
    let result = response::encode(response, &mut writer)
        .and_then(|status| writer.finish(opcode, FLAG_REPLY, status, request_id));
    if result.is_err() {
        out.truncate(start);
    }
    result
}

pub(crate) fn decode_response(header: &Header, body: Bytes) -> Result<Response, DecodeError> {
    check_version(header)?;
    check_common(header, &body, "reply")?;
    if header.flags.get() != FLAG_REPLY {
        return Err(DecodeError::malformed(format!(
            "reply: header.flags must be {FLAG_REPLY:#06x} in a reply (got {:#06x})",
            header.flags.get()
        )));
    }
    // An error reply is read before the opcode is looked at: it answers any
    // frame, including one whose opcode was unknown (it echoes that byte) and a
    // framing error (opcode 0).
    match header.status.get() {
        0 => {}
        status => {
            let Some(code) = ErrorCode::from_u16(status) else {
                return Err(DecodeError::malformed(format!("reply: header.status {status} is not an error code")));
            };
            return response::decode_error(code, &body);
        }
    }
    let opcode = Opcode::from_u8(header.opcode).ok_or_else(|| unknown_opcode(header.opcode))?;
    response::decode(opcode, &body)
}

/// The version is checked before anything else: a frame of another version may
/// lay out everything after the header differently.
fn check_version(header: &Header) -> Result<(), DecodeError> {
    if header.version == VERSION {
        return Ok(());
    }
    Err(DecodeError::new(
        ErrorCode::UnsupportedVersion,
        format!("version {} is not supported (this peer speaks version {VERSION})", header.version),
    ))
}

fn unknown_opcode(opcode: u8) -> DecodeError {
    DecodeError::new(ErrorCode::UnknownOpcode, format!("unknown opcode {opcode:#04x}"))
}

/// What holds for requests and replies alike. `peek_frame` has checked the
/// magic already; it is checked again because a header may come from elsewhere.
fn check_common(header: &Header, body: &Bytes, context: &str) -> Result<(), DecodeError> {
    if header.magic != MAGIC {
        return Err(DecodeError::malformed(format!("{context}: header.magic is not \"TQ\"")));
    }
    if header.reserved.get() != 0 {
        return Err(DecodeError::malformed(format!("{context}: reserved bytes of the header are not 0")));
    }
    let body_len = header.body_len.get();
    if u64::from(body_len) != body.len() as u64 {
        return Err(DecodeError::malformed(format!(
            "{context}: header.body_len is {body_len} but the body given is {} bytes",
            body.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use crate::{peek_frame, Dep, ErrorCode, Header, Request, Response, TaskSpec, HEADER_BYTES};

    fn split(frame: &[u8]) -> (Header, Bytes) {
        let header = peek_frame(frame, usize::MAX).unwrap().unwrap();
        assert_eq!(frame.len(), HEADER_BYTES + header.body_len.get() as usize);
        (header, Bytes::copy_from_slice(&frame[HEADER_BYTES..]))
    }

    #[test]
    fn a_request_and_its_reply_round_trip() {
        let request = Request::EnqueueBatch {
            queue: "q".into(),
            tasks: vec![
                TaskSpec { payload: Bytes::from_static(b"a"), ..TaskSpec::default() },
                TaskSpec {
                    depends_on: vec![Dep::Batch(0), Dep::Task(5)],
                    key: Some("k".into()),
                    ..TaskSpec::default()
                },
            ],
        };
        let mut out = Vec::new();
        request.encode(9, &mut out);
        let (header, body) = split(&out);
        assert_eq!(header.request_id.get(), 9);
        assert_eq!(Request::decode(&header, body).unwrap(), request);

        let reply = Response::error(ErrorCode::QueueNotFound, "no");
        out.clear();
        reply.encode(0x12, 9, &mut out);
        let (header, body) = split(&out);
        assert_eq!(Response::decode(&header, body).unwrap(), reply);
    }

    #[test]
    fn a_body_alone_is_the_frame_body_and_decodes_to_the_same_request() {
        let request = Request::Complete { id: 7, lease: u64::MAX, result: Some(Bytes::from_static(&[0xff, 0, 0xfe])) };
        let mut frame = Vec::new();
        request.encode(3, &mut frame);
        let mut body = vec![9];
        request.encode_body(&mut body).unwrap();
        assert_eq!(&body[1..], &frame[HEADER_BYTES..], "appended after what was there, no header");
        let body = Bytes::copy_from_slice(&body[1..]);
        assert_eq!(Request::decode_body(request.opcode(), body.clone()).unwrap(), request);
        // Another opcode's layout refuses it rather than misreading it.
        assert!(Request::decode_body(crate::Opcode::Cancel, body).is_err());
        // A body the encoder refuses appends nothing.
        let mut out = vec![1, 2, 3];
        let error = Request::GetQueue { queue: "x".repeat(70_000) }.encode_body(&mut out).unwrap_err();
        assert!(error.message.starts_with("get_queue: queue is 70000 long"), "{}", error.message);
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn a_failed_encode_appends_nothing() {
        let mut out = vec![1, 2, 3];
        let request = Request::GetQueue { queue: "x".repeat(70_000) };
        let error = request.try_encode(1, &mut out).unwrap_err();
        assert_eq!(error.message, "get_queue: queue is 70000 long, at most 65535 fit its length field");
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn long_error_messages_are_cut_on_a_character_boundary() {
        let reply = Response::error(ErrorCode::InvalidArgument, "é".repeat(40_000));
        let mut out = Vec::new();
        reply.encode(0x20, 1, &mut out);
        let (header, body) = split(&out);
        let Response::Error { message, .. } = Response::decode(&header, body).unwrap() else { panic!("not an error") };
        assert_eq!(message, "é".repeat(32_767));
    }
}
