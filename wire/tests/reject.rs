//! The decoders refuse what the specification forbids, with the documented code
//! and a message naming the field, and without panicking or allocating more
//! than the frame. Frames here are built by hand (from the golden files, or a
//! header plus literal body bytes), never by the encoder.
//!
//! Run: `cargo test --release -p tqx-wire --test reject`.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use tqx_wire::{
    peek_frame, take_frame, DecodeError, ErrorCode, FrameError, Header, Opcode, Request, Response, FLAG_REPLY,
    FRAME_BODY_BYTES_MAX_DEFAULT, HEADER_BYTES,
};
use zerocopy::IntoBytes;

/// Records the largest single allocation made on the current thread, so a test
/// can show that a decode allocated no more than its input justifies.
struct TrackingAllocator;

thread_local! {
    // `const` initialization: no lazy setup, so using it inside the allocator
    // cannot itself allocate.
    static LARGEST_ALLOCATION_BYTES: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for TrackingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn note_allocation(bytes: usize) {
    // `try_with`: the slot may be gone while the thread exits.
    let _ = LARGEST_ALLOCATION_BYTES.try_with(|largest| largest.set(largest.get().max(bytes)));
}

#[global_allocator]
static ALLOCATOR: TrackingAllocator = TrackingAllocator;

/// Runs `f` and returns its result with the largest allocation it made.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST_ALLOCATION_BYTES.with(|largest| largest.set(0));
    let value = f();
    (value, LARGEST_ALLOCATION_BYTES.with(Cell::get))
}

fn golden(name: &str) -> Vec<u8> {
    let path = common::manifest_dir().join("golden").join(name);
    let text = std::fs::read_to_string(&path).expect("golden file");
    let digits: Vec<u8> = text
        .lines()
        .flat_map(|line| line.split('#').next().unwrap_or("").bytes())
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    digits.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ascii"), 16).expect("hex")).collect()
}

fn request_frame(opcode: u8, body: &[u8]) -> (Header, Bytes) {
    (Header::new(opcode, 0, 0, body.len() as u32, 1), Bytes::copy_from_slice(body))
}

fn reply_frame(opcode: u8, status: u16, body: &[u8]) -> (Header, Bytes) {
    (Header::new(opcode, FLAG_REPLY, status, body.len() as u32, 1), Bytes::copy_from_slice(body))
}

fn split(frame: &[u8]) -> (Header, Bytes) {
    let header = peek_frame(frame, usize::MAX).expect("framing").expect("whole");
    (header, Bytes::copy_from_slice(&frame[HEADER_BYTES..]))
}

fn decode_request(frame: &[u8]) -> Result<Request, DecodeError> {
    let (header, body) = split(frame);
    Request::decode(&header, body)
}

fn decode_response(frame: &[u8]) -> Result<Response, DecodeError> {
    let (header, body) = split(frame);
    Response::decode(&header, body)
}

#[track_caller]
fn assert_malformed<T: std::fmt::Debug>(result: Result<T, DecodeError>, message: &str) {
    let e = result.expect_err("must be refused");
    assert_eq!(e.code, ErrorCode::MalformedRequest, "{e}");
    assert_eq!(e.message, message);
}

/// `body` with `header.body_len` set to match.
fn with_body_len(frame: &[u8], body_len: usize) -> Vec<u8> {
    let mut frame = frame[..HEADER_BYTES + body_len.min(frame.len() - HEADER_BYTES)].to_vec();
    frame[8..12].copy_from_slice(&(body_len as u32).to_le_bytes());
    frame
}

const REQUESTS: [&str; 6] = [
    "hello.request.hex",
    "enqueue.request.hex",
    "enqueue_batch.request.hex",
    "dequeue.request.hex",
    "complete.request.hex",
    "configure_queue.request.hex",
];

const REPLIES: [&str; 9] = [
    "hello.reply.hex",
    "ping.reply.hex",
    "enqueue.reply.hex",
    "enqueue_batch.reply.hex",
    "dequeue.reply.hex",
    "complete.reply.hex",
    "get_task.reply.hex",
    "error.reply.hex",
    "framing_error.reply.hex",
];

#[test]
fn every_truncation_of_a_golden_body_is_refused() {
    for name in REQUESTS {
        let frame = golden(name);
        assert!(decode_request(&frame).is_ok(), "{name} itself decodes");
        for body_len in 0..frame.len() - HEADER_BYTES {
            let short = with_body_len(&frame, body_len);
            let e = decode_request(&short).expect_err(name);
            assert_eq!(e.code, ErrorCode::MalformedRequest, "{name} cut to {body_len}: {e}");
        }
    }
    for name in REPLIES {
        let frame = golden(name);
        assert!(decode_response(&frame).is_ok(), "{name} itself decodes");
        for body_len in 0..frame.len() - HEADER_BYTES {
            let short = with_body_len(&frame, body_len);
            let e = decode_response(&short).expect_err(name);
            assert_eq!(e.code, ErrorCode::MalformedRequest, "{name} cut to {body_len}: {e}");
        }
    }
}

#[test]
fn truncation_errors_name_the_field() {
    let frame = golden("enqueue_batch.request.hex");
    let body_len = frame.len() - HEADER_BYTES;
    assert_malformed(
        decode_request(&with_body_len(&frame, body_len - 1)),
        "enqueue_batch: body ends inside tasks[1].payload",
    );
    assert_malformed(
        decode_request(&with_body_len(&frame, body_len - 9)),
        "enqueue_batch: tasks[1].depends_on count 1 needs at least 8 bytes but only 7 are left",
    );
    assert_malformed(decode_request(&with_body_len(&frame, 3)), "enqueue_batch: body ends inside the fixed part");
    assert_malformed(decode_request(&with_body_len(&frame, 10)), "enqueue_batch: body ends inside queue");
    let frame = golden("dequeue.reply.hex");
    assert_malformed(decode_response(&with_body_len(&frame, 50)), "dequeue reply: body ends inside tasks[0].queue");
}

#[test]
fn trailing_bytes_are_refused() {
    for name in REQUESTS.iter().chain(REPLIES.iter()).chain(["ping.request.hex"].iter()) {
        let mut frame = golden(name);
        frame.push(0);
        let body_len = frame.len() - HEADER_BYTES;
        frame[8..12].copy_from_slice(&(body_len as u32).to_le_bytes());
        let e = if name.ends_with(".request.hex") {
            decode_request(&frame).expect_err(name)
        } else {
            decode_response(&frame).expect_err(name)
        };
        assert_eq!(e.code, ErrorCode::MalformedRequest, "{name}: {e}");
        assert!(e.message.ends_with("1 trailing bytes after the last part"), "{name}: {e}");
    }
}

#[test]
fn a_body_that_differs_from_body_len_is_refused() {
    let frame = golden("enqueue.request.hex");
    let (header, body) = split(&frame);
    assert_malformed(
        Request::decode(&header, body.slice(..10)),
        "enqueue: header.body_len is 53 but the body given is 10 bytes",
    );
}

/// A huge count with a tiny body fails before anything is reserved for it: the
/// largest allocation stays far below what the count would ask for.
#[test]
fn huge_counts_with_tiny_bodies_allocate_nothing_big() {
    const SMALL_BYTES: usize = 4096;
    let cases: Vec<(&str, bool, (Header, Bytes))> = vec![
        (
            "enqueue_batch: tasks count 4294967295 needs at least 137438953440 bytes but only 0 are left",
            true,
            request_frame(0x21, &[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, b'q']),
        ),
        (
            "complete_batch: items count 4294967295 needs at least 103079215080 bytes but only 0 are left",
            true,
            request_frame(0x45, &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
        ),
        ("dequeue: queues count 65535 needs at least 131070 bytes but only 0 are left", true, {
            let mut body = vec![1, 0, 0xff, 0xff];
            body.extend_from_slice(&[0; 20]);
            request_frame(0x30, &body)
        }),
        ("enqueue: task.depends_on count 65535 needs at least 524280 bytes but only 0 are left", true, {
            let mut body = vec![0; 8];
            body.extend_from_slice(&[0; 20]);
            body.extend_from_slice(&[0xff, 0xff]); // depends_count
            body.extend_from_slice(&[0; 10]);
            request_frame(0x20, &body)
        }),
        ("enqueue: body ends inside queue", true, request_frame(0x20, &[0xff, 0xff, 0, 0, 0, 0, 0, 0, b'q'])),
        (
            "list_queues reply: queues count 4294967295 needs at least 446676598680 bytes but only 0 are left",
            false,
            reply_frame(0x11, 0, &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
        ),
        (
            "enqueue_batch reply: tasks count 4294967295 needs at least 68719476720 bytes but only 0 are left",
            false,
            reply_frame(0x21, 0, &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
        ),
        (
            "dequeue reply: tasks count 4294967295 needs at least 171798691800 bytes but only 0 are left",
            false,
            reply_frame(0x30, 0, &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
        ),
        (
            "complete_batch reply: items count 4294967295 needs at least 68719476720 bytes but only 0 are left",
            false,
            reply_frame(0x45, 0, &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
        ),
        ("get_task reply: depends_on count 65535 needs at least 524280 bytes but only 0 are left", false, {
            let mut body = vec![0; 80];
            body[60] = 4; // state completed
            body[70..72].copy_from_slice(&[0xff, 0xff]); // depends_count
            reply_frame(0x40, 0, &body)
        }),
        ("error reply: body ends inside message", false, reply_frame(0x20, 2, &[0xff, 0xff, 0, 0, 0, 0, 0, 0])),
    ];
    for (message, is_request, (header, body)) in cases {
        let (result, largest_bytes) = largest_allocation(|| {
            if is_request {
                Request::decode(&header, body).map(|_| ())
            } else {
                Response::decode(&header, body).map(|_| ())
            }
        });
        assert!(largest_bytes < SMALL_BYTES, "{message}: allocated {largest_bytes} bytes");
        assert_malformed(result, message);
    }
}

#[test]
fn invalid_utf8_is_refused_naming_the_field() {
    let mut frame = golden("enqueue.request.hex");
    frame[HEADER_BYTES + 8] = 0xff; // the first byte of "emails"
    assert_malformed(decode_request(&frame), "enqueue: queue is not valid UTF-8 (at byte 0)");

    let mut frame = golden("enqueue_batch.request.hex");
    let key_start = HEADER_BYTES + 8 + 6 + 32 + 7 + 32;
    frame[key_start + 5] = 0xc3; // a lone lead byte in "order-17"
    assert_malformed(decode_request(&frame), "enqueue_batch: tasks[1].key is not valid UTF-8 (at byte 5)");

    let mut frame = golden("dequeue.request.hex");
    frame[HEADER_BYTES + 26] = 0x80;
    assert_malformed(decode_request(&frame), "dequeue: queues[0] is not valid UTF-8 (at byte 0)");

    let mut frame = golden("dequeue.reply.hex");
    frame[HEADER_BYTES + 48] = 0xfe;
    assert_malformed(decode_response(&frame), "dequeue reply: tasks[0].queue is not valid UTF-8 (at byte 0)");

    let mut frame = golden("error.reply.hex");
    frame[HEADER_BYTES + 8] = 0xff;
    assert_malformed(decode_response(&frame), "error reply: message is not valid UTF-8 (at byte 0)");

    let mut frame = golden("get_task.reply.hex");
    frame[HEADER_BYTES + 80 + 6] = 0xff; // the group
    assert_malformed(decode_response(&frame), "get_task reply: group is not valid UTF-8 (at byte 0)");
}

#[test]
fn an_unknown_opcode_is_its_own_error() {
    for opcode in [0x00, 0x05, 0x15, 0x48, 0xff] {
        let (header, body) = request_frame(opcode, &[]);
        let e = Request::decode(&header, body.clone()).expect_err("unknown");
        assert_eq!(e.code, ErrorCode::UnknownOpcode);
        assert_eq!(e.message, format!("unknown opcode {opcode:#04x}"));
        let (header, body) = reply_frame(opcode, 0, &[]);
        assert_eq!(Response::decode(&header, body).expect_err("unknown").code, ErrorCode::UnknownOpcode);
    }
}

/// An error reply decodes whatever its opcode: it may answer an unknown opcode
/// (echoing the byte) or a framing error (opcode 0).
#[test]
fn an_error_reply_decodes_under_any_opcode() {
    let (header, body) = reply_frame(0x99, ErrorCode::UnknownOpcode as u16, &[2, 0, 0, 0, 0, 0, 0, 0, b'n', b'o']);
    assert_eq!(
        Response::decode(&header, body),
        Ok(Response::Error { code: ErrorCode::UnknownOpcode, message: "no".into() })
    );
}

#[test]
fn an_unknown_status_is_refused() {
    let (header, body) = reply_frame(0x20, 23, &[0; 8]);
    assert_malformed(Response::decode(&header, body), "reply: header.status 23 is not an error code");
    let (header, body) = reply_frame(0x20, u16::MAX, &[0; 8]);
    assert_malformed(Response::decode(&header, body), "reply: header.status 65535 is not an error code");
}

#[test]
fn another_version_is_refused_before_anything_else() {
    for version in [0, 2, 0xff] {
        let mut frame = golden("enqueue.request.hex");
        frame[2] = version;
        frame[3] = 0xee; // an unknown opcode too
        frame[4] = 0x80; // and a flag bit
        frame[HEADER_BYTES + 2] = 1; // and a reserved byte
        let e = decode_request(&frame).expect_err("version");
        assert_eq!(e.code, ErrorCode::UnsupportedVersion);
        assert_eq!(e.message, format!("version {version} is not supported (this peer speaks version 1)"));
        let mut frame = golden("enqueue.reply.hex");
        frame[2] = version;
        assert_eq!(decode_response(&frame).expect_err("version").code, ErrorCode::UnsupportedVersion);
    }
}

#[test]
fn header_fields_must_match_the_direction() {
    let frame = golden("enqueue.request.hex");
    let mut reply_flag = frame.clone();
    reply_flag[4] = 1;
    assert_malformed(decode_request(&reply_flag), "enqueue: header.flags must be 0 in a request (got 0x0001)");
    let mut status = frame.clone();
    status[6] = 4;
    assert_malformed(decode_request(&status), "enqueue: header.status must be 0 in a request (got 4)");
    let mut reserved = frame.clone();
    reserved[15] = 1;
    assert_malformed(decode_request(&reserved), "enqueue: reserved bytes of the header are not 0");

    let frame = golden("enqueue.reply.hex");
    let mut no_reply_flag = frame.clone();
    no_reply_flag[4] = 0;
    assert_malformed(decode_response(&no_reply_flag), "reply: header.flags must be 0x0001 in a reply (got 0x0000)");
    let mut unknown_flag = frame.clone();
    unknown_flag[5] = 0x80;
    assert_malformed(decode_response(&unknown_flag), "reply: header.flags must be 0x0001 in a reply (got 0x8001)");
}

/// One byte changed at `offset` of the body of a golden frame.
fn poke(name: &str, offset: usize, value: u8) -> Vec<u8> {
    let mut frame = golden(name);
    frame[HEADER_BYTES + offset] = value;
    frame
}

#[test]
fn reserved_bytes_flags_and_absent_values_must_be_zero() {
    let cases: [(&str, usize, u8, &str); 17] = [
        ("hello.request.hex", 7, 1, "hello: reserved bytes of reserved are not 0"),
        ("enqueue.request.hex", 2, 1, "enqueue: reserved bytes of reserved are not 0"),
        ("enqueue.request.hex", 14 + 26, 1, "enqueue: reserved bytes of task.reserved are not 0"),
        ("enqueue.request.hex", 14 + 31, 1, "enqueue: reserved bytes of task.reserved are not 0"),
        ("dequeue.request.hex", 4, 3, "dequeue: flags has unknown bits 0x2"),
        ("dequeue.request.hex", 4, 0, "dequeue: lease_ms is 30000 but its presence bit is clear (must be 0)"),
        ("complete.request.hex", 16, 3, "complete: flags has unknown bits 0x2"),
        ("complete.request.hex", 16, 0, "complete: result_len is 13 but its presence bit is clear (must be 0)"),
        ("configure_queue.request.hex", 1, 0x02, "configure_queue: present has unknown bits 0x200"),
        // Bit 8 says a dead_retention_ms follows the queue name; it is not there.
        ("configure_queue.request.hex", 1, 0x01, "configure_queue: body ends inside dead_retention_ms"),
        (
            "configure_queue.request.hex",
            0,
            0xc3,
            "configure_queue: present sets both group_concurrency bits (6: a value, 7: unlimited)",
        ),
        (
            "configure_queue.request.hex",
            0,
            0x81,
            "configure_queue: lease_ms is 10000 but its presence bit is clear (must be 0)",
        ),
        (
            "configure_queue.request.hex",
            0,
            0x82,
            "configure_queue: discipline is 2 but its presence bit is clear (must be 0)",
        ),
        ("configure_queue.request.hex", 3, 1, "configure_queue: reserved bytes of reserved are not 0"),
        ("configure_queue.request.hex", 47, 1, "configure_queue: reserved bytes of reserved are not 0"),
        (
            "configure_queue.request.hex",
            40,
            5,
            "configure_queue: group_concurrency is 5 but must be 0 when bit 7 (unlimited) is set",
        ),
        ("enqueue.reply.hex", 15, 1, "enqueue reply: reserved bytes of reserved are not 0"),
    ];
    for (name, offset, value, message) in cases {
        let frame = poke(name, offset, value);
        let result = if name.ends_with(".request.hex") {
            decode_request(&frame).map(|_| ())
        } else {
            decode_response(&frame).map(|_| ())
        };
        assert_malformed(result, message);
    }
    let frame = poke("get_task.reply.hex", 61, 0x80);
    assert_malformed(decode_response(&frame), "get_task reply: present has unknown bits 0x80");
    let frame = poke("get_task.reply.hex", 61, 0x6c & !0x04);
    assert_malformed(
        decode_response(&frame),
        "get_task reply: purge_at_ms is 1764003600500 but its presence bit is clear (must be 0)",
    );
    let frame = poke("get_task.reply.hex", 61, 0x6c & !0x20);
    assert_malformed(
        decode_response(&frame),
        "get_task reply: group_len is 8 but its presence bit is clear (must be 0)",
    );
}

#[test]
fn booleans_and_enums_out_of_range_are_refused() {
    assert_malformed(decode_response(&poke("ping.reply.hex", 0, 2)), "ping reply: ready is 2, expected 0 or 1");
    assert_malformed(decode_response(&poke("enqueue.reply.hex", 9, 2)), "enqueue reply: created is 2, expected 0 or 1");
    assert_malformed(
        decode_response(&poke("enqueue.reply.hex", 8, 7)),
        "enqueue reply: state is 7, not a task state (0..=6)",
    );
    assert_malformed(
        decode_response(&poke("complete.reply.hex", 8, 0xff)),
        "complete reply: state is 255, not a task state (0..=6)",
    );
    assert_malformed(
        decode_request(&poke("configure_queue.request.hex", 2, 4)),
        "configure_queue: discipline is 4, not a discipline (0 fifo, 1 lifo, 2 priority, 3 round_robin)",
    );
    let (header, body) = request_frame(0x13, &[0, 0, 2, 0, 0, 0, 0, 0]);
    assert_malformed(Request::decode(&header, body), "delete_queue: force is 2, expected 0 or 1");
    let (header, body) = request_frame(0x42, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
    assert_malformed(Request::decode(&header, body), "fail: retry is 9, expected 0 or 1");
}

#[test]
fn batch_outcomes_are_checked() {
    let mut body = vec![1, 0, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&[7, 0, 0, 0, 0, 0, 0, 0, 5, 0, 3, 0, 0, 0, 0, 0]); // status 5 with a state
    let (header, bytes) = reply_frame(0x45, 0, &body);
    assert_malformed(
        Response::decode(&header, bytes),
        "complete_batch reply: items[0].state is 3 but its presence bit is clear (must be 0)",
    );
    body[16] = 99; // status 99
    body[18] = 0;
    let (header, bytes) = reply_frame(0x45, 0, &body);
    assert_malformed(
        Response::decode(&header, bytes),
        "complete_batch reply: items[0].status is 99, not an error code",
    );
    body[16] = 0; // status 0, state completed
    body[18] = 4;
    let (header, bytes) = reply_frame(0x45, 0, &body);
    assert_eq!(
        Response::decode(&header, bytes),
        Ok(Response::CompletedBatch(vec![(7, Ok(tqx_wire::TaskState::Completed))]))
    );
}

#[test]
fn a_batch_dependency_with_high_bits_is_refused() {
    let mut frame = golden("enqueue_batch.request.hex");
    let dep_start = HEADER_BYTES + 8 + 6 + 32 + 7 + 32 + 8;
    assert_eq!(frame[dep_start + 7], 0x80);
    frame[dep_start + 4] = 1; // bit 32
    assert_malformed(
        decode_request(&frame),
        "enqueue_batch: tasks[1].depends_on[0] names a batch index but bits 32..62 are not 0",
    );
}

#[test]
fn peek_frame_waits_for_a_whole_frame() {
    let frame = golden("enqueue.request.hex");
    for end in 0..frame.len() {
        assert_eq!(peek_frame(&frame[..end], FRAME_BODY_BYTES_MAX_DEFAULT), Ok(None), "{end} bytes");
    }
    let header = peek_frame(&frame, FRAME_BODY_BYTES_MAX_DEFAULT).expect("framing").expect("whole");
    assert_eq!(header.opcode, Opcode::Enqueue as u8);
    assert_eq!(header.body_len.get(), 53);
    // More bytes after the frame (the next one) change nothing.
    let mut two = frame.clone();
    two.extend_from_slice(&frame[..5]);
    assert_eq!(peek_frame(&two, FRAME_BODY_BYTES_MAX_DEFAULT), Ok(Some(header)));
}

#[test]
fn peek_frame_refuses_bad_magic_at_once() {
    assert_eq!(peek_frame(b"G", 1024), Ok(None));
    assert_eq!(peek_frame(b"GE", 1024), Err(FrameError::BadMagic(*b"GE")));
    assert_eq!(peek_frame(b"HTTP/1.1", 1024), Err(FrameError::BadMagic(*b"HT")));
    assert_eq!(peek_frame(b"Tq", 1024), Err(FrameError::BadMagic(*b"Tq")));
    assert_eq!(
        FrameError::BadMagic(*b"HT").to_string(),
        r#"bad magic 4854 (expected 5451, "TQ")"#,
        "the message of the golden framing error reply"
    );
}

#[test]
fn peek_frame_refuses_an_over_limit_body_from_the_header_alone() {
    let limit = FRAME_BODY_BYTES_MAX_DEFAULT;
    let at_limit = Header::new(0x20, 0, 0, limit as u32, 1);
    assert_eq!(peek_frame(at_limit.as_bytes(), limit), Ok(None), "at the limit: wait for the body");
    let over = Header::new(0x20, 0, 0, limit as u32 + 1, 1);
    assert_eq!(peek_frame(over.as_bytes(), limit), Err(FrameError::TooLarge { body_len: limit as u64 + 1, limit }));
    let huge = Header::new(0x20, 0, 0, u32::MAX, 1);
    assert_eq!(peek_frame(huge.as_bytes(), limit), Err(FrameError::TooLarge { body_len: u32::MAX.into(), limit }));
}

#[test]
fn take_frame_leaves_a_partial_frame_in_the_buffer() {
    let frame = golden("complete.request.hex");
    let mut buffer = bytes::BytesMut::from(&frame[..frame.len() - 1]);
    assert_eq!(take_frame(&mut buffer, 1024), Ok(None));
    assert_eq!(buffer.len(), frame.len() - 1);
    buffer.extend_from_slice(&frame[frame.len() - 1..]);
    buffer.extend_from_slice(b"TQ");
    let (header, body) = take_frame(&mut buffer, 1024).expect("framing").expect("whole");
    assert_eq!(header.request_id.get(), 5);
    assert_eq!(body.len(), 37);
    assert_eq!(&buffer[..], b"TQ");
    let mut bad = bytes::BytesMut::from(&b"XX"[..]);
    assert_eq!(take_frame(&mut bad, 1024), Err(FrameError::BadMagic(*b"XX")));
}
