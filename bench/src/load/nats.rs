//! `nats`: NATS JetStream over the NATS client protocol (text), written here
//! on the load generator's one client model rather than through `async-nats`,
//! for the reason `amqp` gives: `async-nats` runs its own connection tasks and
//! request multiplexer, whose work and pacing would not be the shared driver's
//! (and whose CPU, on a multi-threaded runtime, would escape `client_cpu`).
//!
//! - Connection: the server's `INFO`, then `CONNECT` (headers on, so empty
//!   answers come as status headers; no `+OK` acknowledgements), `SUB` to an
//!   inbox of this connection's own (`_INBOX.<token>.*`), `PING` → `PONG`.
//! - The setup connection creates a **file-storage** stream named after the
//!   queue (`retention: workqueue`: an acknowledged message is deleted, as a
//!   completed task is forgotten) and a durable pull consumer with explicit
//!   acks. Both calls are idempotent.
//! - An enqueue is `PUB queue _INBOX.<token>.<request id>`: JetStream answers
//!   on that inbox with `{"stream":..,"seq":N}` once the message is stored
//!   (written to the page cache; NATS 2.9 `fsync`s every 2 minutes:
//!   docs/bench-harness.md).
//! - A dequeue is a pull request, `$JS.API.CONSUMER.MSG.NEXT.<stream>.workers`
//!   with `{"batch":1,"no_wait":true}`: the message comes back under its own
//!   subject with its ack subject as reply-to (matched to the oldest pull in
//!   flight: the consumer serves pulls in order), or a `404 No Messages`
//!   status on the pull's inbox (an empty dequeue, sent again at once as on
//!   every system).
//! - A complete is a publish to the message's ack subject with a reply inbox
//!   (a synchronous ack): the server answers once the ack is processed.
//! - The server's `PING`s are answered with `PONG` on the next write (the codec
//!   writes only when asked to encode); `bench/run` starts the server with a
//!   10-minute `ping_interval`, so none but the first falls inside a run.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, Bytes, BytesMut};

use super::codec::{find, parse_u64, Codec, CodecParams, Handle, ProtocolError, Reply, Req, Role};

/// The durable pull consumer every consumer connection shares.
const CONSUMER: &str = "workers";
/// Messages the consumer may hold unacknowledged, and pull requests it may
/// hold waiting, over every connection: above what a run can keep in flight
/// (50 connections × 4,096 on the open loop), so neither throttles. At the
/// default `max_waiting` (512) an open-loop cycle 16 deep was answered
/// `409 Exceeded MaxWaiting` for most of its pulls.
const ACK_PENDING_MAX: u32 = 262_144;
/// A control line (`MSG`, `HMSG`, `INFO`, `-ERR`) longer than this is not NATS.
/// `INFO` carries the server's description (a few hundred bytes).
const LINE_BYTES_MAX: usize = 64 << 10;
/// The largest message body accepted in a reply (NATS's default `max_payload`
/// is 1 MiB).
const BODY_BYTES_MAX: usize = 16 << 20;

/// Handshake steps (`Req::Step`), each answered by one server reply.
const STEP_CONNECT: u8 = 0;
const STEP_STREAM: u8 = 1;
const STEP_CONSUMER: u8 = 2;

/// Distinguishes the inboxes of the connections of one process.
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

pub(crate) struct NatsCodec {
    subject: String,
    stream: String,
    /// `_INBOX.<token>.`: a reply to request N arrives on this prefix plus N.
    inbox: String,
    payload: Bytes,
    /// The pull request's subject and body.
    next_subject: String,
    /// Request ids of the pulls in flight, in order.
    pulls: VecDeque<u64>,
    /// The `CONNECT` step, answered by `PONG`.
    connect: Option<u64>,
    /// A server `PING` not answered yet.
    pong_owed: bool,
}

impl NatsCodec {
    fn publish(&self, out: &mut Vec<u8>, subject: &str, request_id: u64, body: &[u8]) {
        out.extend_from_slice(format!("PUB {subject} {}{request_id} {}\r\n", self.inbox, body.len()).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
    }

    /// The request id a reply subject names, if it is one of our inboxes.
    fn request_id(&self, subject: &[u8]) -> Option<u64> {
        let rest = subject.strip_prefix(self.inbox.as_bytes())?;
        match parse_u64(rest) {
            Some((id, n)) if n == rest.len() => Some(id),
            _ => None,
        }
    }
}

impl Codec for NatsCodec {
    fn new(params: &CodecParams) -> NatsCodec {
        // Stream names may not hold `.` (queue names may).
        let stream: String = params.queue.chars().map(|c| if c == '.' { '_' } else { c }).collect();
        let token = (u64::from(std::process::id()) << 32) | NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
        NatsCodec {
            subject: params.queue.clone(),
            next_subject: format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{CONSUMER}"),
            stream,
            inbox: format!("_INBOX.{token:x}."),
            payload: params.payload.clone(),
            pulls: VecDeque::new(),
            connect: None,
            pong_owed: false,
        }
    }

    fn handshake(&self, role: Role) -> Vec<Req> {
        match role {
            Role::Producer | Role::Consumer => vec![Req::Step(STEP_CONNECT)],
            Role::Both => vec![Req::Step(STEP_CONNECT), Req::Step(STEP_STREAM), Req::Step(STEP_CONSUMER)],
        }
    }

    fn in_order(&self) -> bool {
        false
    }

    fn encode(&mut self, req: &Req, request_id: u64, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pong_owed) {
            out.extend_from_slice(b"PONG\r\n");
        }
        match req {
            Req::Enqueue => {
                let payload = self.payload.clone();
                self.publish(out, &self.subject, request_id, &payload);
            }
            Req::Dequeue => {
                self.pulls.push_back(request_id);
                let subject = self.next_subject.clone();
                self.publish(out, &subject, request_id, br#"{"batch":1,"no_wait":true}"#);
            }
            Req::Complete { handle: Handle::Value(ack_subject), .. } => {
                let subject = String::from_utf8_lossy(ack_subject).into_owned();
                self.publish(out, &subject, request_id, b"");
            }
            Req::Step(STEP_CONNECT) => {
                self.connect = Some(request_id);
                out.extend_from_slice(
                    br#"CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true,"protocol":1,"name":"tqx-bench"}"#,
                );
                out.extend_from_slice(format!("\r\nSUB {}* 1\r\nPING\r\n", self.inbox).as_bytes());
            }
            Req::Step(STEP_STREAM) => {
                let body = format!(
                    r#"{{"name":"{}","subjects":["{}"],"retention":"workqueue","storage":"file","num_replicas":1,"discard":"old"}}"#,
                    self.stream, self.subject
                );
                let subject = format!("$JS.API.STREAM.CREATE.{}", self.stream);
                self.publish(out, &subject, request_id, body.as_bytes());
            }
            Req::Step(STEP_CONSUMER) => {
                let body = format!(
                    r#"{{"stream_name":"{}","config":{{"durable_name":"{CONSUMER}","ack_policy":"explicit","deliver_policy":"all","max_ack_pending":{ACK_PENDING_MAX},"max_waiting":{ACK_PENDING_MAX}}}}}"#,
                    self.stream
                );
                let subject = format!("$JS.API.CONSUMER.DURABLE.CREATE.{}.{CONSUMER}", self.stream);
                self.publish(out, &subject, request_id, body.as_bytes());
            }
            _ => unreachable!("not a NATS request: {req:?}"),
        }
    }

    fn decode(
        &mut self,
        input: &mut BytesMut,
        _front: Option<&Req>,
    ) -> Result<Option<(Option<u64>, Reply)>, ProtocolError> {
        loop {
            let Some(line_end) = find(input, b"\r\n") else {
                if input.len() > LINE_BYTES_MAX {
                    return Err(ProtocolError("NATS control line too long".into()));
                }
                return Ok(None);
            };
            let line = &input[..line_end];
            let words: Vec<&[u8]> = line.split(|&b| b == b' ' || b == b'\t').filter(|w| !w.is_empty()).collect();
            let bad = || ProtocolError(format!("bad NATS line {:?}", String::from_utf8_lossy(line)));
            let number = |w: &[u8]| match parse_u64(w) {
                Some((v, n)) if n == w.len() => Ok(v as usize),
                _ => Err(bad()),
            };
            match words.first().copied().unwrap_or_default() {
                b"INFO" | b"+OK" => {
                    input.advance(line_end + 2);
                }
                b"PING" => {
                    self.pong_owed = true;
                    input.advance(line_end + 2);
                }
                b"PONG" => {
                    let id = self.connect.take().ok_or_else(|| ProtocolError("a PONG to no PING".into()))?;
                    input.advance(line_end + 2);
                    return Ok(Some((Some(id), Reply::Done)));
                }
                b"-ERR" => {
                    return Err(ProtocolError(format!("NATS: {}", String::from_utf8_lossy(line))));
                }
                verb @ (b"MSG" | b"HMSG") => {
                    // MSG subject sid [reply-to] bytes; HMSG ... header-bytes total-bytes.
                    let headers = verb == b"HMSG";
                    let fixed = if headers { 5 } else { 4 };
                    if words.len() != fixed && words.len() != fixed + 1 {
                        return Err(bad());
                    }
                    let subject = words[1];
                    let reply_to = (words.len() == fixed + 1).then(|| words[3]);
                    let total = number(words[words.len() - 1])?;
                    let header_bytes = if headers { number(words[words.len() - 2])? } else { 0 };
                    if total > BODY_BYTES_MAX || header_bytes > total {
                        return Err(bad());
                    }
                    let start = line_end + 2;
                    if input.len() < start + total + 2 {
                        return Ok(None);
                    }
                    if &input[start + total..start + total + 2] != b"\r\n" {
                        return Err(ProtocolError("NATS message without its CRLF".into()));
                    }
                    let header = &input[start..start + header_bytes];
                    let body = &input[start + header_bytes..start + total];
                    let status = if headers {
                        // `NATS/1.0 404 No Messages`: the status is the second word.
                        let first = &header[..find(header, b"\r\n").unwrap_or(header.len())];
                        first.split(|&b| b == b' ').nth(1).and_then(|w| parse_u64(w).map(|(v, _)| v))
                    } else {
                        None
                    };
                    let (id, reply) = match (self.request_id(subject), reply_to) {
                        // A pulled message: its own subject, its ack subject as reply-to.
                        (None, Some(ack)) if ack.starts_with(b"$JS.ACK.") => {
                            let id = self
                                .pulls
                                .pop_front()
                                .ok_or_else(|| ProtocolError("a JetStream message no pull asked for".into()))?;
                            let handle = Handle::Value(Bytes::copy_from_slice(ack));
                            (id, Reply::Leased { handle, join_slot: None })
                        }
                        (Some(id), _) => {
                            let is_pull = self.pulls.contains(&id);
                            if is_pull {
                                self.pulls.retain(|&p| p != id);
                            }
                            let reply = match status {
                                Some(404 | 408) if is_pull => Reply::Empty,
                                Some(503) => Reply::Error("no responders (no such stream)".into()),
                                Some(code) => Reply::Error(format!("status {code}")),
                                None if find(body, br#""error""#).is_some() => {
                                    Reply::Error(String::from_utf8_lossy(body).into_owned())
                                }
                                None => match find(body, br#""seq":"#) {
                                    Some(at) => {
                                        let digits = &body[at + 6..];
                                        let digits = &digits[digits.iter().take_while(|b| **b == b' ').count()..];
                                        Reply::Enqueued { id: parse_u64(digits).map(|(v, _)| v) }
                                    }
                                    None => Reply::Done,
                                },
                            };
                            (id, reply)
                        }
                        _ => {
                            return Err(ProtocolError(format!(
                                "a NATS message on {:?}",
                                String::from_utf8_lossy(subject)
                            )))
                        }
                    };
                    input.advance(start + total + 2);
                    return Ok(Some((Some(id), reply)));
                }
                _ => return Err(bad()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> NatsCodec {
        let mut codec = NatsCodec::new(&CodecParams {
            addr: String::new(),
            queue: "bench.q".into(),
            payload: Bytes::from_static(b"hello"),
            payload_bytes: 5,
            batch: 1,
            reliable: false,
            dequeue_wait_ms: 0,
            prefetch: 1,
            token: None,
            connector: Default::default(),
        });
        codec.inbox = "_INBOX.t.".into();
        codec
    }

    fn feed(codec: &mut NatsCodec, bytes: &[u8]) -> Vec<(Option<u64>, Reply)> {
        let mut input = BytesMut::new();
        let mut replies = Vec::new();
        for &b in bytes {
            input.extend_from_slice(&[b]);
            while let Some(reply) = codec.decode(&mut input, None).unwrap() {
                replies.push(reply);
            }
        }
        assert!(input.is_empty(), "{input:?}");
        replies
    }

    #[test]
    fn requests_name_their_inbox() {
        let mut codec = codec();
        let mut out = Vec::new();
        for req in codec.handshake(Role::Both) {
            codec.encode(&req, 1, &mut out);
        }
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains("\r\nSUB _INBOX.t.* 1\r\nPING\r\n"), "{text}");
        assert!(text.contains(r#"PUB $JS.API.STREAM.CREATE.bench_q _INBOX.t.1 "#), "{text}");
        assert!(text.contains(r#""subjects":["bench.q"],"retention":"workqueue","storage":"file""#), "{text}");
        assert!(text.contains("PUB $JS.API.CONSUMER.DURABLE.CREATE.bench_q.workers _INBOX.t.1 "), "{text}");
        assert!(text.contains(r#""max_ack_pending":262144,"max_waiting":262144"#), "{text}");
        out.clear();
        codec.encode(&Req::Enqueue, 7, &mut out);
        codec.encode(&Req::Dequeue, 8, &mut out);
        codec.encode(
            &Req::Complete { handle: Handle::Value(Bytes::from_static(b"$JS.ACK.x.1")), join_slot: None },
            9,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "PUB bench.q _INBOX.t.7 5\r\nhello\r\n\
             PUB $JS.API.CONSUMER.MSG.NEXT.bench_q.workers _INBOX.t.8 26\r\n{\"batch\":1,\"no_wait\":true}\r\n\
             PUB $JS.ACK.x.1 _INBOX.t.9 0\r\n\r\n"
        );
    }

    #[test]
    fn replies_as_nats_2_9_sends_them_parse_split_anywhere() {
        let mut codec = codec();
        let mut out = Vec::new();
        codec.encode(&Req::Step(STEP_CONNECT), 1, &mut out);
        codec.encode(&Req::Dequeue, 3, &mut out);
        codec.encode(&Req::Dequeue, 4, &mut out);
        // Bytes captured from nats-server 2.9.10 (ids changed).
        let stream: &[u8] = b"INFO {\"server_id\":\"N\",\"version\":\"2.9.10\"} \r\nPONG\r\n\
            MSG _INBOX.t.2 1  28\r\n{\"stream\":\"bench\", \"seq\":41}\r\n\
            MSG bench.q 1 $JS.ACK.bench.workers.1.1.1.17965.0 5\r\nhello\r\nPING\r\n\
            HMSG _INBOX.t.4 1  28 28\r\nNATS/1.0 404 No Messages\r\n\r\n\r\n\
            MSG _INBOX.t.5 1  0\r\n\r\n\
            HMSG _INBOX.t.6 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n\
            MSG _INBOX.t.7 1 40\r\n{\"error\":{\"code\":503,\"description\":\"x\"}}\r\n";
        let replies = feed(&mut codec, stream);
        let ack = Handle::Value(Bytes::from_static(b"$JS.ACK.bench.workers.1.1.1.17965.0"));
        assert_eq!(
            replies,
            vec![
                (Some(1), Reply::Done),
                (Some(2), Reply::Enqueued { id: Some(41) }),
                (Some(3), Reply::Leased { handle: ack, join_slot: None }),
                (Some(4), Reply::Empty),
                (Some(5), Reply::Done),
                (Some(6), Reply::Error("no responders (no such stream)".into())),
                (Some(7), Reply::Error(r#"{"error":{"code":503,"description":"x"}}"#.into())),
            ]
        );
        // The server's PING is answered on the next write.
        let mut out = Vec::new();
        codec.encode(&Req::Enqueue, 8, &mut out);
        assert!(out.starts_with(b"PONG\r\nPUB "));
    }

    #[test]
    fn malformed_replies_are_protocol_errors() {
        for bad in [
            &b"-ERR 'Authorization Violation'\r\n"[..],
            b"MSG _INBOX.t.1 1 3\r\nabcde\r\n",
            b"MSG other 1 3\r\nabc\r\n",
            b"MSG bench 1 $JS.ACK.x 3\r\nabc\r\n",
            b"WHAT\r\n",
        ] {
            let mut codec = codec();
            let mut input = BytesMut::from(bad);
            assert!(codec.decode(&mut input, None).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
