//! `connection`: a whole connection's bytes, delivered in random chunk sizes,
//! through the reactor's per-connection parse step, must give the same results
//! as the same bytes delivered at once (a peer may split its bytes anywhere,
//! and TCP may too).
//!
//! Input: byte 0 picks the protocol (even: HTTP, odd: binary frames; for binary,
//! `byte0 >> 1` also picks how many frames one step may take, as the reactor
//! limits requests in flight, and bit 4 whether the server has tokens: then
//! `auth` with [`FUZZ_TOKEN`] authenticates, anything else fails, and requests
//! go through the authorization of `auth.rs`), bytes 1..=3 are chunk sizes
//! (each `b + 1`, used in turn), and the rest is the script the peer sends.
//!
//! The steps are the reactors' own pure functions: `http::take_requests`
//! (src/server/reactor.rs) and `binary::take_frames` (src/server/binary_conn.rs).
//! What they took (requests, rendered answers, the fatal error that closes) is
//! compared in order, and so is what was left unread when the peer's stream
//! ended. For binary connections, every frame the server would send (answers,
//! and the reply of each command run against a small engine) must decode as a
//! reply on the client side.

use bytes::BytesMut;
use taskqueuex::auth::Tokens;
use taskqueuex::binary::{self, take_frames_with_tokens, BinaryNext, ConnState};
use taskqueuex::http::{take_requests, Limits, Next};

use crate::http_request::small_limits;
use crate::replies::{self, check_reply_frame};

/// The token the binary connections with tokens accept: consume on queues
/// `q*` (so requests are both allowed and forbidden), the SHA-256 of
/// `tqx_fuzz` (the corpus's `binary_auth_*` sessions send it).
pub const FUZZ_TOKEN: &str = "tqx_fuzz";

pub fn fuzz_tokens() -> Tokens {
    let hash: String = taskqueuex::auth::hash_token(FUZZ_TOKEN.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    Tokens::parse(&format!("sha256={hash} scopes=consume queues=q*\n")).expect("a valid token line")
}

/// What a connection produced, in order, and what was left in its buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome<E> {
    pub events: Vec<E>,
    /// The server closes the connection (a fatal error, or a request that does
    /// not keep it): nothing after it is read.
    pub closed: bool,
    /// Bytes received and not taken when the script ended (0 once closed: what
    /// was received after the close depends on the chunks, and is never read).
    pub left: usize,
}

pub fn run(data: &[u8]) {
    let [mode, a, b, c, script @ ..] = data else {
        return;
    };
    let sizes = [usize::from(*a) + 1, usize::from(*b) + 1, usize::from(*c) + 1];
    if mode % 2 == 0 {
        // Small limits as well as the defaults, so that refusals past them (413,
        // 431) happen with inputs of a few KiB, also across chunk boundaries.
        for limits in [Limits::default(), small_limits()] {
            let whole = http(script, &[script.len().max(1)], &limits);
            let chunked = http(script, &sizes, &limits);
            assert_eq!(chunked, whole, "HTTP in chunks of {sizes:?} against all at once");
        }
    } else {
        let frames_max = usize::from(mode >> 1) % 8 + 1;
        let table = fuzz_tokens();
        let tokens = (mode & 0x10 != 0).then_some(&table);
        let whole = binary(script, &[script.len().max(1)], usize::MAX, tokens);
        let chunked = binary(script, &sizes, frames_max, tokens);
        assert_eq!(
            chunked.0, whole.0,
            "binary frames in chunks of {sizes:?}, {frames_max} a step, against all at once"
        );
        assert_eq!(chunked.1, whole.1, "connection state");
        for event in &whole.0.events {
            check_binary_answer(event);
        }
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

/// An HTTP connection: `script` arrives in chunks of `sizes`, and after each
/// one the reactor takes what it can with `take_requests`.
pub fn http(script: &[u8], sizes: &[usize], limits: &Limits) -> Outcome<Next> {
    let mut inbox: Vec<u8> = Vec::new();
    let mut events: Vec<Next> = Vec::new();
    for chunk in chunks(script, sizes) {
        inbox.extend_from_slice(chunk);
        let before = events.len();
        take_requests(&mut inbox, limits, &mut events);
        for (k, next) in events.iter().enumerate().skip(before) {
            match next {
                Next::Incomplete => panic!("take_requests reports only requests and fatal errors"),
                Next::Fatal { .. } | Next::Request { keep_alive: false, .. } => {
                    assert_eq!(k + 1, events.len(), "nothing is taken after what closes the connection");
                    return Outcome { events, closed: true, left: 0 };
                }
                Next::Request { .. } => {}
            }
        }
    }
    Outcome { events, closed: false, left: inbox.len() }
}

/// A binary connection: `script` arrives in chunks of `sizes`; after each one
/// the reactor calls `take_frames` with room for `frames_max` frames, again
/// and again (as replies free room) until it takes nothing more.
pub fn binary(
    script: &[u8],
    sizes: &[usize],
    frames_max: usize,
    tokens: Option<&Tokens>,
) -> (Outcome<BinaryNext>, ConnState) {
    let limits = binary::Limits::default();
    let mut state = ConnState::new();
    let mut inbox = BytesMut::new();
    let mut events: Vec<BinaryNext> = Vec::new();
    for chunk in chunks(script, sizes) {
        inbox.extend_from_slice(chunk);
        loop {
            let before = events.len();
            take_frames_with_tokens(&mut inbox, &mut state, &limits, tokens, frames_max, &mut events);
            let taken = events.len() - before;
            assert!(taken <= frames_max, "took {taken} frames with room for {frames_max}");
            if state.is_closed() {
                assert!(
                    matches!(events.last(), Some(BinaryNext::Fatal(_))),
                    "closed only by a framing error or failed authentications"
                );
                let outcome = Outcome { events, closed: true, left: 0 };
                return (outcome, state);
            }
            if taken < frames_max {
                break;
            }
        }
    }
    (Outcome { events, closed: false, left: inbox.len() }, state)
}

/// Every frame the server sends for `event` decodes as a reply.
fn check_binary_answer(event: &BinaryNext) {
    match event {
        BinaryNext::Respond(frame) | BinaryNext::Fatal(frame) => {
            check_reply_frame(frame);
        }
        BinaryNext::Ping { request_id } => {
            let mut frame = Vec::new();
            binary::render_pong(true, *request_id, &mut frame);
            check_reply_frame(&frame);
        }
        BinaryNext::Execute { request_id, opcode, command, .. } => {
            replies::assert_command_has_opcode(command, *opcode);
            replies::run_and_check(command.clone(), *request_id);
        }
    }
}
