//! `wire_frame`: any bytes as a stream of binary-protocol frames, through
//! `tqx_wire::peek_frame`, then `Request::decode` and `Response::decode` on each
//! whole frame found.
//!
//! Properties, besides "never panics" (the decoder is total, wire/src/lib.rs):
//! - `peek_frame` finds a frame only when all of it is present, and never past
//!   its limit;
//! - a request that decodes re-encodes to one frame with the same opcode and
//!   request id, which decodes to the same request (round trip); likewise a
//!   response;
//! - a request the server maps to a command fits one log record within the
//!   bound of `src/limits.rs`, runs against a small engine, and its reply
//!   renders on both protocols (`replies.rs`).

use bytes::Bytes;
use tqx_wire::{peek_frame, Header, Request, Response, FRAME_BODY_BYTES_MAX_DEFAULT, HEADER_BYTES};

pub fn run(data: &[u8]) {
    let mut rest = data;
    loop {
        let header = match peek_frame(rest, FRAME_BODY_BYTES_MAX_DEFAULT) {
            Ok(Some(header)) => header,
            Ok(None) | Err(_) => return,
        };
        let frame_len = HEADER_BYTES + header.body_len.get() as usize;
        assert!(frame_len <= rest.len(), "peek_frame found a frame of {frame_len} bytes in {}", rest.len());
        assert!(header.body_len.get() as usize <= FRAME_BODY_BYTES_MAX_DEFAULT);
        // The server decodes bodies as slices of its receive buffer: a body that
        // starts at any alignment, with bytes after it that are not its own.
        let buffer = Bytes::copy_from_slice(rest);
        let body = buffer.slice(HEADER_BYTES..frame_len);
        check_frame(&header, body);
        rest = &rest[frame_len..];
    }
}

/// Decodes one whole frame both ways and checks the round trips.
pub fn check_frame(header: &Header, body: Bytes) {
    let request_id = header.request_id.get();
    if let Ok(request) = Request::decode(header, body.clone()) {
        assert_eq!(request.opcode() as u8, header.opcode, "a request decodes to its header's opcode");
        let mut encoded = Vec::new();
        request.encode(request_id, &mut encoded);
        let (again_header, again_body) = reframe(&encoded);
        assert_eq!(again_header.opcode, header.opcode);
        assert_eq!(again_header.request_id.get(), request_id);
        assert!(!again_header.is_reply(), "a request is not a reply");
        match Request::decode(&again_header, again_body) {
            Ok(again) => assert_eq!(again, request, "request round trip"),
            Err(error) => panic!("{request:?} encodes to a frame that does not decode: {error:?}"),
        }
        // What the server makes of it: a command, run, its reply rendered on
        // both protocols (hello and ping are answered by the connection).
        if let Ok(command) = taskqueuex::binary::request_to_command(request) {
            crate::replies::assert_command_has_opcode(&command, header.opcode);
            crate::replies::check_record_fits(&command, body.len());
            crate::replies::run_and_check(command, request_id);
        }
    }
    if let Ok(response) = Response::decode(header, body) {
        let mut encoded = Vec::new();
        response.encode(header.opcode, request_id, &mut encoded);
        let (again_header, again_body) = reframe(&encoded);
        assert_eq!(again_header.opcode, header.opcode);
        assert_eq!(again_header.request_id.get(), request_id);
        assert!(again_header.is_reply(), "a response is a reply");
        match Response::decode(&again_header, again_body) {
            Ok(again) => assert_eq!(again, response, "response round trip"),
            Err(error) => panic!("{response:?} encodes to a frame that does not decode: {error:?}"),
        }
    }
}

/// `encoded` must be exactly one whole frame; returns its header and body.
fn reframe(encoded: &[u8]) -> (Header, Bytes) {
    let header = match peek_frame(encoded, usize::MAX) {
        Ok(Some(header)) => header,
        other => panic!("an encoder wrote something that is not a whole frame: {other:?}"),
    };
    assert_eq!(HEADER_BYTES + header.body_len.get() as usize, encoded.len(), "an encoder wrote one frame");
    (header, Bytes::copy_from_slice(&encoded[HEADER_BYTES..]))
}
