//! What the four protocols have in common: the requests a workload asks for and
//! the replies it gets back, independent of the bytes. Each protocol module
//! (`binary`, `http`, `resp`, `beanstalk`) turns a [`Req`] into request bytes and
//! reply bytes into a [`Reply`]; the driver and the workloads never see a byte of
//! protocol, so every system is driven by exactly the same client logic.

use bytes::{Bytes, BytesMut};

/// Which connections a handshake is for: beanstalkd producers `use` the tube,
/// consumers `watch` it (and `ignore` the default one), as a real client would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Producer,
    Consumer,
    /// The setup connection, and readers (status lookups): everything.
    Both,
}

/// What a consumer needs to finish a task it received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Handle {
    /// Nothing: the dequeue already finished the task (Redis `RPOP`).
    None,
    /// TaskQueueX: the task id and its lease token.
    Lease { id: u64, lease: u64 },
    /// beanstalkd: the job id; AMQP: the delivery tag.
    Id(u64),
    /// Redis reliable pattern: the value `LMOVE` returned, to `LREM` from the
    /// processing list; NATS JetStream: the message's ack subject.
    Value(Bytes),
}

/// A request, as the workload sees it. Protocols that have no such operation
/// never get asked for it: `super::unsupported_reason` keeps those
/// combinations out before a connection is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Req {
    /// TaskQueueX binary: the version handshake.
    Hello,
    /// TaskQueueX binary: presents the run's token (`--token`), after the hello.
    Auth,
    /// One step of a handshake that takes several round trips, each answered
    /// by one server reply (AMQP's connection negotiation, channel and queue
    /// setup; NATS's CONNECT and JetStream stream and consumer setup). The
    /// step numbers belong to the protocol module.
    Step(u8),
    /// Readiness: binary ping, `GET /healthz`, Redis `PING`.
    Ping,
    /// beanstalkd: `use TUBE` (producers).
    UseTube,
    /// beanstalkd: `watch TUBE` (consumers).
    WatchTube,
    /// beanstalkd: `ignore default` (consumers).
    IgnoreDefault,
    /// TaskQueueX: configure the queue (only `retention_ms`).
    Configure { retention_ms: u64 },
    /// One task with the standard payload.
    Enqueue,
    /// `--batch` tasks in one request; their ids are not wanted.
    EnqueueBatch,
    /// `count` tasks in one request, ids wanted (preloading).
    PreloadBatch { count: usize },
    /// Redis: the hash a Redis-based queue keeps per task (`HSET`), for the
    /// status scenario's lookups.
    PreloadStatus { id: u64 },
    /// Take one task (an empty answer is [`Reply::Empty`]).
    Dequeue,
    /// Finish a task taken by [`Req::Dequeue`]. `join_slot` is the deps
    /// scenario's bookkeeping, carried back to the workload with the reply.
    Complete { handle: Handle, join_slot: Option<u64> },
    /// Look a task up by id.
    Status { id: u64 },
    /// Deps scenario: the parent (standard payload). `slot`, here and below, is
    /// the DAG's marker (`workload::DepsShared::marker`): bookkeeping only.
    DepParent { slot: u64 },
    /// Deps scenario: `super::DEPS_CHILDREN` tasks, each depending on `parent`, in
    /// one batch; ids wanted.
    DepChildren { parent: u64, slot: u64 },
    /// Deps scenario: the join task, depending on every child; its payload
    /// carries `slot`, so the consumer that completes it can find the DAG's start.
    DepJoin { slot: u64, children: Vec<u64> },
}

/// A reply, as the workload sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Success, nothing more to know.
    Done,
    /// Readiness: the server is up but still recovering.
    NotReady,
    /// One task enqueued; its id when the system gives one (Redis does not).
    Enqueued { id: Option<u64> },
    /// A batch enqueued; ids only when the request wanted them.
    EnqueuedBatch { ids: Vec<u64> },
    /// A task taken; `join_slot` is set when its payload is a deps join's.
    Leased { handle: Handle, join_slot: Option<u64> },
    /// A dequeue that found nothing.
    Empty,
    /// The system answered an error: counted, and the connection goes on.
    Error(String),
}

/// The stream cannot be trusted (bad framing, a reply to nothing): the driver
/// closes the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a codec is built from: the run's parameters that shape request bytes.
#[derive(Clone, Debug)]
pub(crate) struct CodecParams {
    /// `HOST:PORT` as given (HTTP's `Host` header).
    pub addr: String,
    pub queue: String,
    /// The standard payload ([`payload`]).
    pub payload: Bytes,
    /// `--payload-bytes`, for the join payloads of the deps scenario.
    pub payload_bytes: usize,
    /// Tasks per [`Req::EnqueueBatch`].
    pub batch: usize,
    /// Redis: the reliable pattern (`LMOVE` + `LREM`) instead of `RPOP`.
    pub reliable: bool,
    /// TaskQueueX: how long a dequeue waits for a task (a long poll); 0 answers
    /// at once, empty or not.
    pub dequeue_wait_ms: u64,
    /// AMQP: messages a consumer may hold unacknowledged (`basic.qos`): the
    /// connection's `--pipeline`, as many as it would have dequeues in flight.
    pub prefetch: usize,
    /// TaskQueueX: the API token (`--token`): the binary protocol sends an
    /// `auth` after its `hello`, HTTP an `Authorization: Bearer` header on
    /// every request.
    pub token: Option<String>,
    /// How every connection of the run is opened: plain or TLS
    /// (`--tls-ca`). Not the codec's, but carried with its parameters since
    /// every connection is opened from them.
    pub connector: super::stream::Connector,
}

/// One protocol's request encoder and incremental reply parser.
pub(crate) trait Codec: Sized {
    fn new(params: &CodecParams) -> Self;

    /// Requests a connection in `role` sends before its first timed one.
    fn handshake(&self, role: Role) -> Vec<Req>;

    /// True when replies come back in request order (every protocol but the
    /// binary one, whose replies carry the request id instead).
    fn in_order(&self) -> bool;

    /// Appends `req`'s bytes to `out`. `request_id` counts from 1 on each
    /// connection; only the binary protocol sends it.
    fn encode(&mut self, req: &Req, request_id: u64, out: &mut Vec<u8>);

    /// Takes one whole reply off the front of `input`, or `None` (and leaves
    /// `input` alone) until one is there. `front` is the oldest request without
    /// a reply, which in-order protocols need to interpret the bytes. Returns the
    /// request id the reply carries, when the protocol has one.
    fn decode(
        &mut self,
        input: &mut BytesMut,
        front: Option<&Req>,
    ) -> Result<Option<(Option<u64>, Reply)>, ProtocolError>;
}

/// Prefix of a join payload: `{"j":SLOT,...`.
const JOIN_PREFIX: &[u8] = br#"{"j":"#;

/// The standard payload: `payload_bytes` bytes of printable text that are also
/// one JSON value, so that every system stores the same bytes and HTTP can carry
/// them as they are: `{"p":"xxx…"}`, or a number of that many digits below 8 bytes.
pub fn payload(payload_bytes: usize) -> Vec<u8> {
    if payload_bytes < 8 {
        return vec![b'1'; payload_bytes];
    }
    let mut out = Vec::with_capacity(payload_bytes);
    out.extend_from_slice(br#"{"p":""#);
    out.resize(payload_bytes - 2, b'x');
    out.extend_from_slice(br#""}"#);
    out
}

/// The payload of a deps join task: `{"j":MARKER,"p":"xxx…"}`, padded to
/// `payload_bytes` when that is long enough. The marker names the DAG (see
/// `workload::DepsShared`).
pub(crate) fn join_payload(payload_bytes: usize, slot: u64) -> Vec<u8> {
    let head = format!(r#"{{"j":{slot},"p":""#);
    let mut out = head.into_bytes();
    let pad = payload_bytes.saturating_sub(out.len() + 2);
    out.resize(out.len() + pad, b'x');
    out.extend_from_slice(br#""}"#);
    out
}

/// The marker of a join payload, `None` for any other payload.
pub(crate) fn join_slot(payload: &[u8]) -> Option<u64> {
    let rest = payload.strip_prefix(JOIN_PREFIX)?;
    parse_u64(rest).map(|(value, _)| value)
}

/// A decimal u64 at the start of `input`, and how many bytes it took.
pub(crate) fn parse_u64(input: &[u8]) -> Option<(u64, usize)> {
    let digits = input.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    let mut value: u64 = 0;
    for &b in &input[..digits] {
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some((value, digits))
}

/// Position of `needle` in `haystack`.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_requested_length_and_is_json() {
        for n in [1, 7, 8, 9, 100, 4096] {
            let p = payload(n);
            assert_eq!(p.len(), n);
            assert!(p.iter().all(|b| b.is_ascii_graphic()));
            serde_json::from_slice::<serde_json::Value>(&p).expect("valid JSON");
        }
        assert_eq!(payload(10), br#"{"p":"xx"}"#);
    }

    #[test]
    fn join_payloads_carry_their_slot() {
        let p = join_payload(100, 42);
        assert_eq!(p.len(), 100);
        serde_json::from_slice::<serde_json::Value>(&p).expect("valid JSON");
        assert_eq!(join_slot(&p), Some(42));
        assert_eq!(join_slot(&join_payload(0, 7)), Some(7));
        assert_eq!(join_slot(&payload(100)), None);
    }

    #[test]
    fn parse_u64_stops_at_the_first_non_digit() {
        assert_eq!(parse_u64(b"123 x"), Some((123, 3)));
        assert_eq!(parse_u64(b"x"), None);
        assert_eq!(parse_u64(b"18446744073709551615"), Some((u64::MAX, 20)));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
    }
}
