//! `connection`: a whole connection's bytes, delivered in random chunk sizes,
//! through the reactor's per-connection parse loop, must give the same results
//! as the same bytes delivered at once (a peer may split its bytes anywhere,
//! and TCP may too).
//!
//! Input: byte 0 picks the protocol (even: HTTP, odd: binary frames), bytes 1..=3
//! are chunk sizes (each `b + 1`, used in turn), and the rest is the script the
//! peer sends.
//!
//! The loop is the reactor's (src/server/reactor.rs, `process`): append what
//! arrived, take every whole request from the front of the buffer, stop at the
//! first that closes the connection, keep the rest for the next read. What it
//! took (requests, rendered answers, the fatal error that closes) is compared,
//! in order; so is what was left unread when the peer's stream ended.

use taskqueuex::http::{next_request, Limits, Next};

use crate::http_request::small_limits;

/// What a connection produced, in order, and what was left in its buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome<E> {
    pub events: Vec<E>,
    /// The connection was closed by the server (a fatal error, or a request that
    /// does not keep it).
    pub closed: bool,
    /// Bytes received and not consumed when the script ended (unless closed).
    pub left: usize,
}

pub fn run(data: &[u8]) {
    let [protocol, a, b, c, script @ ..] = data else {
        return;
    };
    let sizes = [usize::from(*a) + 1, usize::from(*b) + 1, usize::from(*c) + 1];
    if protocol % 2 == 0 {
        // Small limits as well as the defaults, so that refusals past them (413,
        // 431) happen with inputs of a few KiB, also across chunk boundaries.
        for limits in [Limits::default(), small_limits()] {
            let whole = http(script, &[script.len().max(1)], &limits);
            let chunked = http(script, &sizes, &limits);
            assert_eq!(chunked, whole, "HTTP in chunks of {sizes:?} against all at once");
        }
    } else {
        let whole = binary(script, &[script.len().max(1)]);
        let chunked = binary(script, &sizes);
        assert_eq!(chunked, whole, "binary frames in chunks of {sizes:?} against all at once");
    }
}

/// Splits `script` into chunks of `sizes` (in turn).
fn chunks<'a>(script: &'a [u8], sizes: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = script;
    let mut k = 0;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = sizes[k % sizes.len()].min(rest.len());
        k += 1;
        let (chunk, after) = rest.split_at(size);
        rest = after;
        Some(chunk)
    })
}

/// What the HTTP parse loop takes from the buffer.
pub type HttpEvent = Next;

/// The reactor's HTTP loop over `script` arriving in chunks of `sizes`.
pub fn http(script: &[u8], sizes: &[usize], limits: &Limits) -> Outcome<HttpEvent> {
    let mut buffer: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    for chunk in chunks(script, sizes) {
        buffer.extend_from_slice(chunk);
        let mut consumed_total = 0;
        loop {
            let next = next_request(&buffer[consumed_total..], limits);
            match &next {
                Next::Incomplete => break,
                Next::Fatal { .. } => {
                    events.push(next);
                    return Outcome { events, closed: true, left: 0 };
                }
                Next::Request { keep_alive, consumed, .. } => {
                    consumed_total += consumed;
                    let close = !keep_alive;
                    events.push(next);
                    if close {
                        return Outcome { events, closed: true, left: 0 };
                    }
                }
            }
        }
        buffer.drain(..consumed_total);
    }
    Outcome { events, closed: false, left: buffer.len() }
}

/// One frame taken from a binary connection's buffer: its header and what its
/// body decoded to, or the framing error that closes the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum BinaryEvent {
    Frame { header: tqx_wire::Header, request: Result<tqx_wire::Request, tqx_wire::DecodeError> },
    Fatal(tqx_wire::FrameError),
}

/// A binary connection's loop over `script` arriving in chunks of `sizes`:
/// frame with `peek_frame`, decode each whole frame as a request.
pub fn binary(script: &[u8], sizes: &[usize]) -> Outcome<BinaryEvent> {
    let mut buffer: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    for chunk in chunks(script, sizes) {
        buffer.extend_from_slice(chunk);
        let mut consumed_total = 0;
        loop {
            match tqx_wire::peek_frame(&buffer[consumed_total..], tqx_wire::FRAME_BODY_BYTES_MAX_DEFAULT) {
                Ok(None) => break,
                Err(error) => {
                    events.push(BinaryEvent::Fatal(error));
                    return Outcome { events, closed: true, left: 0 };
                }
                Ok(Some(header)) => {
                    let start = consumed_total + tqx_wire::HEADER_BYTES;
                    let end = start + header.body_len.get() as usize;
                    let body = bytes::Bytes::copy_from_slice(&buffer[start..end]);
                    let request = tqx_wire::Request::decode(&header, body);
                    events.push(BinaryEvent::Frame { header, request });
                    consumed_total = end;
                }
            }
        }
        buffer.drain(..consumed_total);
    }
    Outcome { events, closed: false, left: buffer.len() }
}
