//! Property tests: every request and reply variant survives encode ->
//! `peek_frame` -> decode unchanged; every frame the decoder accepts re-encodes
//! to exactly its own bytes (one encoding per value, so nothing is silently
//! normalized); and no input, random or a mutated valid frame, makes a decoder
//! panic.
//!
//! Cases: 256 per property by default; `PROPTEST_CASES=n` overrides, and a
//! failing run prints `PROPTEST_RNG_SEED=…` to replay it.
//! Run: `cargo test --release -p tqx-wire --test roundtrip`.

mod common;

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use tqx_wire::{
    peek_frame, take_frame, DecodeError, ErrorCode, Header, Opcode, Request, Response, FLAG_REPLY, HEADER_BYTES,
};

use common::strategies::{self, u64_edgy};
use common::{config, split_frame};

fn request_strategy(name: &str) -> BoxedStrategy<Request> {
    strategies::requests().into_iter().find(|(n, _)| *n == name).map(|(_, s)| s).expect("a strategy of that name")
}

fn response_strategy(name: &str) -> BoxedStrategy<(u8, Response)> {
    strategies::responses().into_iter().find(|(n, _)| *n == name).map(|(_, s)| s).expect("a strategy of that name")
}

fn request_round_trip(request: &Request, request_id: u64) -> Result<(), TestCaseError> {
    let mut out = Vec::new();
    request.encode(request_id, &mut out);
    let (header, body) = split_frame(&out);
    prop_assert_eq!(header.opcode, request.opcode() as u8);
    prop_assert_eq!(header.flags.get(), 0);
    prop_assert_eq!(header.status.get(), 0);
    prop_assert_eq!(header.request_id.get(), request_id);
    let decoded = Request::decode(&header, body).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&decoded, request);
    Ok(())
}

fn response_round_trip(opcode: u8, response: &Response, request_id: u64) -> Result<(), TestCaseError> {
    let mut out = Vec::new();
    response.encode(opcode, request_id, &mut out);
    let (header, body) = split_frame(&out);
    prop_assert_eq!(header.opcode, opcode);
    prop_assert_eq!(header.flags.get(), FLAG_REPLY);
    let status = match response {
        Response::Error { code, .. } => *code as u16,
        _ => 0,
    };
    prop_assert_eq!(header.status.get(), status);
    prop_assert_eq!(header.request_id.get(), request_id);
    let decoded = Response::decode(&header, body).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&decoded, response);
    Ok(())
}

fn run_request(name: &str) {
    let mut runner = TestRunner::new(config());
    let result = runner.run(&(request_strategy(name), u64_edgy()), |(request, id)| request_round_trip(&request, id));
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

fn run_response(name: &str) {
    let mut runner = TestRunner::new(config());
    let result = runner.run(&(response_strategy(name), u64_edgy()), |((opcode, response), id)| {
        response_round_trip(opcode, &response, id)
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

macro_rules! round_trips {
    ($run:ident: $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $run(stringify!($name));
            }
        )*
    };
}

mod request {
    use super::run_request;

    round_trips!(run_request: hello, ping, auth, stats, configure_queue, list_queues, get_queue, delete_queue,
        list_tasks, enqueue, enqueue_batch, dequeue, get_task, complete, fail, extend, cancel, complete_batch,
        retry_task, delete_task);
}

mod response {
    use super::run_response;

    round_trips!(run_response: hello, pong, authenticated, stats, queue, queues, queue_deleted, enqueued, enqueued_batch,
        leased, task, task_page, task_deleted, task_state, extended, completed_batch, error);
}

#[test]
fn there_is_a_round_trip_property_for_every_opcode_and_reply() {
    let names: Vec<&str> = strategies::requests().iter().map(|(n, _)| *n).collect();
    let opcodes: Vec<&str> = Opcode::ALL.iter().map(|o| o.name()).collect();
    assert_eq!(names, opcodes);
    // Response has 17 variants; the compiler checks this match is exhaustive.
    let variant = |r: &Response| match r {
        Response::Hello { .. } => "hello",
        Response::Pong { .. } => "pong",
        Response::Authenticated { .. } => "authenticated",
        Response::Stats(_) => "stats",
        Response::Queue(_) => "queue",
        Response::Queues(_) => "queues",
        Response::QueueDeleted => "queue_deleted",
        Response::Enqueued(_) => "enqueued",
        Response::EnqueuedBatch(_) => "enqueued_batch",
        Response::Leased(_) => "leased",
        Response::Task(_) => "task",
        Response::TaskPage { .. } => "task_page",
        Response::TaskDeleted => "task_deleted",
        Response::TaskState { .. } => "task_state",
        Response::Extended { .. } => "extended",
        Response::CompletedBatch(_) => "completed_batch",
        Response::Error { .. } => "error",
    };
    let mut runner = TestRunner::new(config());
    for (name, strategy) in strategies::responses() {
        let (_, response) = strategy.new_tree(&mut runner).expect("a value").current();
        assert_eq!(variant(&response), name);
    }
    assert_eq!(strategies::responses().len(), 17);
}

fn any_request() -> BoxedStrategy<Request> {
    proptest::strategy::Union::new(strategies::requests().into_iter().map(|(_, s)| s)).boxed()
}

fn any_response() -> BoxedStrategy<(u8, Response)> {
    proptest::strategy::Union::new(strategies::responses().into_iter().map(|(_, s)| s)).boxed()
}

/// Only these codes come out of a decoder; anything else is a bug.
fn check_decode_error(e: &DecodeError) -> Result<(), TestCaseError> {
    prop_assert!(
        matches!(e.code, ErrorCode::MalformedRequest | ErrorCode::UnknownOpcode | ErrorCode::UnsupportedVersion),
        "unexpected code in {e}"
    );
    Ok(())
}

/// Decodes `frame` as a request; if that works, encoding the value must give
/// `frame` back, byte for byte.
fn decode_request_canonically(frame: &[u8]) -> Result<(), TestCaseError> {
    let (header, body) = split_frame(frame);
    match Request::decode(&header, body) {
        Ok(request) => {
            let mut again = Vec::new();
            request.encode(header.request_id.get(), &mut again);
            prop_assert_eq!(again.as_slice(), frame, "{:?} re-encodes differently", request);
        }
        Err(e) => check_decode_error(&e)?,
    }
    Ok(())
}

fn decode_response_canonically(frame: &[u8]) -> Result<(), TestCaseError> {
    let (header, body) = split_frame(frame);
    match Response::decode(&header, body) {
        Ok(response) => {
            let mut again = Vec::new();
            response.encode(header.opcode, header.request_id.get(), &mut again);
            prop_assert_eq!(again.as_slice(), frame, "{:?} re-encodes differently", response);
        }
        Err(e) => check_decode_error(&e)?,
    }
    Ok(())
}

/// Byte flips anywhere but in the magic and `body_len` (which `peek_frame`
/// guards): a position (taken modulo the frame's length) and a non-zero mask.
fn mutations() -> impl Strategy<Value = Vec<(usize, u8)>> {
    vec((any::<usize>(), 1..=u8::MAX), 1..4)
}

fn mutate(frame: &mut [u8], mutations: &[(usize, u8)]) {
    for &(position, mask) in mutations {
        let position = position % frame.len();
        if position < 2 || (8..12).contains(&position) {
            continue;
        }
        frame[position] ^= mask;
    }
}

proptest! {
    #![proptest_config(config())]

    /// A mutated request is either refused with a decode error or is the
    /// canonical encoding of what it decodes to.
    #[test]
    fn mutated_requests_are_refused_or_canonical(request in any_request(), id in u64_edgy(), flips in mutations()) {
        let mut frame = Vec::new();
        request.encode(id, &mut frame);
        mutate(&mut frame, &flips);
        decode_request_canonically(&frame)?;
    }

    #[test]
    fn mutated_replies_are_refused_or_canonical((opcode, response) in any_response(), id in u64_edgy(), flips in mutations()) {
        let mut frame = Vec::new();
        response.encode(opcode, id, &mut frame);
        mutate(&mut frame, &flips);
        decode_response_canonically(&frame)?;
    }

    /// Random bodies, mostly zeros (so that more of them get past the first
    /// checks), under every opcode byte, as requests and as replies.
    #[test]
    fn random_bodies_are_refused_or_canonical(
        opcode in any::<u8>(),
        status in prop_oneof![Just(0u16), any::<u16>()],
        body in vec(prop_oneof![3 => Just(0u8), 1 => any::<u8>()], 0..160),
    ) {
        let body_len = u32::try_from(body.len()).expect("small");
        let mut frame = Header::new(opcode, 0, 0, body_len, 1).as_bytes_vec();
        frame.extend_from_slice(&body);
        decode_request_canonically(&frame)?;
        let mut frame = Header::new(opcode, FLAG_REPLY, status, body_len, 1).as_bytes_vec();
        frame.extend_from_slice(&body);
        decode_response_canonically(&frame)?;
    }

    /// Every strict prefix of a body is refused: each part's length is declared
    /// before it, so a body cannot end early and still be whole.
    #[test]
    fn every_strict_prefix_of_a_request_body_is_refused(request in any_request()) {
        let mut frame = Vec::new();
        request.encode(1, &mut frame);
        let (header, body) = split_frame(&frame);
        for end in prefix_lengths(body.len()) {
            let short = Header::new(header.opcode, 0, 0, end as u32, 1);
            let e = Request::decode(&short, body.slice(..end)).expect_err("a strict prefix");
            prop_assert_eq!(e.code, ErrorCode::MalformedRequest);
        }
    }

    #[test]
    fn every_strict_prefix_of_a_reply_body_is_refused((opcode, response) in any_response()) {
        let mut frame = Vec::new();
        response.encode(opcode, 1, &mut frame);
        let (header, body) = split_frame(&frame);
        for end in prefix_lengths(body.len()) {
            let short = Header::new(header.opcode, FLAG_REPLY, header.status.get(), end as u32, 1);
            let e = Response::decode(&short, body.slice(..end)).expect_err("a strict prefix");
            prop_assert_eq!(e.code, ErrorCode::MalformedRequest);
        }
    }

    /// Frames encoded one after another into one buffer (pipelining) come back
    /// out one at a time, in order, with `take_frame`.
    #[test]
    fn pipelined_frames_split_in_order(requests in vec(any_request(), 1..4), chunk in 1usize..64) {
        let mut stream = Vec::new();
        for (id, request) in requests.iter().enumerate() {
            request.encode(id as u64, &mut stream);
        }
        // Fed in chunks, as a socket would deliver them.
        let mut buffer = BytesMut::new();
        let mut decoded = Vec::new();
        for piece in stream.chunks(chunk) {
            buffer.extend_from_slice(piece);
            while let Some((header, body)) = take_frame(&mut buffer, usize::MAX).expect("framing") {
                prop_assert_eq!(header.request_id.get(), decoded.len() as u64);
                decoded.push(Request::decode(&header, body).expect("a valid frame"));
            }
        }
        prop_assert!(buffer.is_empty());
        prop_assert_eq!(decoded, requests);
    }
}

/// Every length below `len` for small bodies; for large ones (a 65 KiB string
/// decodes in O(len), so all prefixes would be O(len^2)) the first and last
/// 300 and a stride through the middle.
fn prefix_lengths(len: usize) -> Vec<usize> {
    if len <= 2048 {
        return (0..len).collect();
    }
    let mut lengths: Vec<usize> = (0..300).chain(len - 300..len).collect();
    lengths.extend((300..len - 300).step_by(997));
    lengths
}

/// `Header` as an owned byte vector (the start of a hand-built frame).
trait AsBytesVec {
    fn as_bytes_vec(&self) -> Vec<u8>;
}

impl AsBytesVec for Header {
    fn as_bytes_vec(&self) -> Vec<u8> {
        zerocopy::IntoBytes::as_bytes(self).to_vec()
    }
}

#[test]
fn encoding_appends_to_what_the_buffer_holds() {
    let mut out = b"earlier".to_vec();
    Request::Ping.encode(3, &mut out);
    assert_eq!(&out[..7], b"earlier");
    let (header, body) = split_frame(&out[7..]);
    assert_eq!(Request::decode(&header, body), Ok(Request::Ping));
    assert_eq!(out.len(), 7 + HEADER_BYTES);
    assert_eq!(peek_frame(&out[7..], 0), Ok(Some(header)));
}

#[test]
fn payloads_decode_as_slices_of_the_body_without_a_copy() {
    let request = Request::Complete { id: 1, lease: 2, result: Some(Bytes::from_static(b"result bytes")) };
    let mut out = Vec::new();
    request.encode(1, &mut out);
    let (header, body) = split_frame(&out);
    let body_start = body.as_ptr() as usize;
    let Ok(Request::Complete { result: Some(result), .. }) = Request::decode(&header, body.clone()) else {
        panic!("not a complete with a result");
    };
    let offset = result.as_ptr() as usize - body_start;
    assert_eq!(offset, 24, "the result starts right after the 24-byte fixed part, in the same buffer");
}
