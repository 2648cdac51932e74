//! Byte layouts of every body (docs/wire.md), encoders and total decoders.

use bytes::Bytes;

use crate::error::DecodeError;
use crate::frame::Header;
use crate::message::{Request, Response};

pub(crate) fn encode_request(request: &Request, request_id: u64, out: &mut Vec<u8>) {
    let _ = (request, request_id, out);
    todo!("wire codec")
}

pub(crate) fn decode_request(header: &Header, body: Bytes) -> Result<Request, DecodeError> {
    let _ = (header, body);
    todo!("wire codec")
}

pub(crate) fn encode_response(response: &Response, opcode: u8, request_id: u64, out: &mut Vec<u8>) {
    let _ = (response, opcode, request_id, out);
    todo!("wire codec")
}

pub(crate) fn decode_response(header: &Header, body: Bytes) -> Result<Response, DecodeError> {
    let _ = (header, body);
    todo!("wire codec")
}
