//! `rabbitmq`: AMQP 0-9-1 (the RabbitMQ dialect), written here on the load
//! generator's one client model rather than through an AMQP client crate.
//!
//! Why not `lapin` (or `amqprs`): every figure must come from the same client
//! logic for every system (one thread, one write per batch of due requests, the
//! open loop's schedule, one histogram). `lapin` runs its own I/O thread and
//! executor, so its CPU would escape `client_cpu` and its pacing would not be
//! ours; a second driver around a crate's futures would duplicate the open
//! loop. The part of AMQP a queue benchmark needs is small: the frames below.
//!
//! - Connection: protocol header, `connection.start` / `start-ok` (PLAIN,
//!   guest/guest: RabbitMQ allows it from loopback), `tune` / `tune-ok` (no
//!   heartbeats: a run is seconds long), `open`, then channel 1.
//! - Producers put the channel in confirm mode (`confirm.select`); an enqueue
//!   is `basic.publish` (persistent, to the default exchange, routed to the
//!   queue) and is answered when the broker confirms it (`basic.ack`, maybe
//!   `multiple`; `basic.nack` is an error reply). A quorum queue confirms a
//!   message once it is in the Raft log of a majority of its members — on one
//!   node, its own write-ahead log, written and `fdatasync`ed (docs/bench-harness.md).
//! - The setup connection declares the queue: durable, `x-queue-type: quorum`.
//! - Consumers use RabbitMQ's recommended path, a subscription (`basic.qos`
//!   prefetch = the connection's depth, `basic.consume` with manual acks),
//!   rather than polling with `basic.get`: a dequeue sends nothing and is
//!   answered by the next `basic.deliver`; a complete is `basic.ack`, which
//!   AMQP never answers, so the codec answers it itself (`Reply::Done` at once).
//!   An empty queue leaves the dequeue waiting (there is no empty answer).
//! - Replies are matched by request id (`in_order` is false): confirms by
//!   delivery tag, deliveries in arrival order, the setup methods in order.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use super::codec::{Codec, CodecParams, Handle, ProtocolError, Reply, Req, Role};

const PROTOCOL_HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";
const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
/// Frame type, channel and size before the payload, and the end octet after it.
const FRAME_OVERHEAD_BYTES: usize = 8;
/// The frame size we ask for; RabbitMQ's default maximum (128 KiB) too. A
/// longer body is split across body frames.
const FRAME_BYTES_MAX: u32 = 131_072;
/// A frame announced larger than this is not RabbitMQ talking.
const FRAME_BYTES_LIMIT: usize = 16 << 20;
/// The one channel each connection uses.
const CHANNEL: u16 = 1;
/// `basic.properties` flag: `delivery-mode` is present.
const FLAG_DELIVERY_MODE: u16 = 1 << 12;
/// `delivery-mode` 2: persistent (a quorum queue stores every message anyway).
const PERSISTENT: u8 = 2;

// (class, method) pairs.
const CONNECTION_START: (u16, u16) = (10, 10);
const CONNECTION_START_OK: (u16, u16) = (10, 11);
const CONNECTION_TUNE: (u16, u16) = (10, 30);
const CONNECTION_TUNE_OK: (u16, u16) = (10, 31);
const CONNECTION_OPEN: (u16, u16) = (10, 40);
const CONNECTION_OPEN_OK: (u16, u16) = (10, 41);
const CONNECTION_CLOSE: (u16, u16) = (10, 50);
const CONNECTION_BLOCKED: (u16, u16) = (10, 60);
const CONNECTION_UNBLOCKED: (u16, u16) = (10, 61);
const CHANNEL_OPEN: (u16, u16) = (20, 10);
const CHANNEL_OPEN_OK: (u16, u16) = (20, 11);
const CHANNEL_CLOSE: (u16, u16) = (20, 40);
const QUEUE_DECLARE: (u16, u16) = (50, 10);
const QUEUE_DECLARE_OK: (u16, u16) = (50, 11);
const BASIC_QOS: (u16, u16) = (60, 10);
const BASIC_QOS_OK: (u16, u16) = (60, 11);
const BASIC_CONSUME: (u16, u16) = (60, 20);
const BASIC_CONSUME_OK: (u16, u16) = (60, 21);
const BASIC_PUBLISH: (u16, u16) = (60, 40);
const BASIC_DELIVER: (u16, u16) = (60, 60);
const BASIC_ACK: (u16, u16) = (60, 80);
const BASIC_NACK: (u16, u16) = (60, 120);
const CONFIRM_SELECT: (u16, u16) = (85, 10);
const CONFIRM_SELECT_OK: (u16, u16) = (85, 11);

/// Handshake steps (`Req::Step`), each answered by one server method.
const STEP_HEADER: u8 = 0;
const STEP_START_OK: u8 = 1;
const STEP_TUNE_OK_OPEN: u8 = 2;
const STEP_CHANNEL: u8 = 3;
const STEP_CONFIRMS: u8 = 4;
const STEP_DECLARE: u8 = 5;
const STEP_QOS: u8 = 6;
const STEP_CONSUME: u8 = 7;

/// Where the parser is within a delivery (method, then header, then body frames).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Content {
    None,
    /// `basic.deliver` read; its content header is next.
    Header {
        tag: u64,
    },
    /// Body bytes still to come.
    Body {
        tag: u64,
        remaining: u64,
    },
}

pub(crate) struct AmqpCodec {
    queue: String,
    /// `basic.publish` + content header + body frames, encoded once for
    /// frames of `publish_frame_max` bytes.
    publish: Vec<u8>,
    publish_frame_max: u32,
    payload: Bytes,
    /// Messages a consumer may hold unacknowledged (`basic.qos`).
    prefetch: u16,
    /// From `connection.tune`: what `tune-ok` answers (capped at ours).
    frame_max: u32,
    /// Request ids waiting for a synchronous method (the handshake steps), in order.
    methods: VecDeque<u64>,
    /// Delivery tag of the next publish (confirm mode counts from 1).
    next_publish_tag: u64,
    /// Publishes waiting for their confirm: (delivery tag, request id), in tag order.
    confirms: VecDeque<(u64, u64)>,
    /// Dequeues waiting for a delivery, in order.
    dequeues: VecDeque<u64>,
    /// Deliveries that came before a dequeue asked (the first after
    /// `basic.consume`): the next dequeue takes them at once.
    early: VecDeque<u64>,
    /// Replies the codec gives itself (acks, early deliveries).
    ready: VecDeque<(u64, Reply)>,
    content: Content,
}

impl AmqpCodec {
    fn method_frame(out: &mut Vec<u8>, channel: u16, method: (u16, u16), args: &[u8]) {
        out.push(FRAME_METHOD);
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&((4 + args.len()) as u32).to_be_bytes());
        out.extend_from_slice(&method.0.to_be_bytes());
        out.extend_from_slice(&method.1.to_be_bytes());
        out.extend_from_slice(args);
        out.push(FRAME_END);
    }

    fn encode_publish(queue: &str, payload: &[u8], frame_max: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + 96);
        let mut args = vec![0, 0];
        short_string(&mut args, "");
        short_string(&mut args, queue);
        args.push(0); // mandatory, immediate
        Self::method_frame(&mut out, CHANNEL, BASIC_PUBLISH, &args);
        let mut header = Vec::with_capacity(16);
        header.extend_from_slice(&60u16.to_be_bytes());
        header.extend_from_slice(&0u16.to_be_bytes());
        header.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        header.extend_from_slice(&FLAG_DELIVERY_MODE.to_be_bytes());
        header.push(PERSISTENT);
        frame(&mut out, FRAME_HEADER, CHANNEL, &header);
        for chunk in payload.chunks((frame_max as usize - FRAME_OVERHEAD_BYTES).max(1)) {
            frame(&mut out, FRAME_BODY, CHANNEL, chunk);
        }
        out
    }

    /// The request id of the oldest handshake step waiting.
    fn method_reply(&mut self, what: (u16, u16)) -> Result<u64, ProtocolError> {
        self.methods.pop_front().ok_or_else(|| ProtocolError(format!("AMQP method {what:?} answers no request")))
    }

    /// A delivery: answers the oldest dequeue, or waits for the next one.
    fn delivered(&mut self, tag: u64) {
        match self.dequeues.pop_front() {
            Some(id) => self.ready.push_back((id, Reply::Leased { handle: Handle::Id(tag), join_slot: None })),
            None => self.early.push_back(tag),
        }
    }

    /// One whole frame: updates the state, queues the replies it completes.
    fn on_frame(&mut self, kind: u8, payload: &[u8]) -> Result<(), ProtocolError> {
        let mut r = Reader { bytes: payload };
        match (kind, self.content) {
            (FRAME_HEARTBEAT, _) => return Ok(()),
            (FRAME_HEADER, Content::Header { tag }) => {
                r.u16()?; // class
                r.u16()?; // weight
                let remaining = r.u64()?;
                self.content = Content::None;
                if remaining == 0 {
                    self.delivered(tag);
                } else {
                    self.content = Content::Body { tag, remaining };
                }
                return Ok(());
            }
            (FRAME_BODY, Content::Body { tag, remaining }) => {
                let remaining = remaining
                    .checked_sub(payload.len() as u64)
                    .ok_or_else(|| ProtocolError("AMQP body frame longer than its content header said".into()))?;
                self.content = Content::Body { tag, remaining };
                if remaining == 0 {
                    self.content = Content::None;
                    self.delivered(tag);
                }
                return Ok(());
            }
            (FRAME_METHOD, Content::None) => {}
            _ => {
                return Err(ProtocolError(format!(
                    "unexpected AMQP frame type {kind} (content state {:?})",
                    self.content
                )))
            }
        }
        let method = (r.u16()?, r.u16()?);
        match method {
            CONNECTION_START => {
                let id = self.method_reply(method)?;
                self.ready.push_back((id, Reply::Done));
            }
            CONNECTION_TUNE => {
                // One channel is all we use: at most what any broker allows.
                r.u16()?;
                let frame_max = r.u32()?;
                // 0 means "no limit".
                self.frame_max = if frame_max == 0 { FRAME_BYTES_MAX } else { frame_max.min(FRAME_BYTES_MAX) };
                let id = self.method_reply(method)?;
                self.ready.push_back((id, Reply::Done));
            }
            CONNECTION_OPEN_OK | CHANNEL_OPEN_OK | CONFIRM_SELECT_OK | QUEUE_DECLARE_OK | BASIC_QOS_OK
            | BASIC_CONSUME_OK => {
                let id = self.method_reply(method)?;
                if method == CONFIRM_SELECT_OK {
                    self.next_publish_tag = 1;
                }
                self.ready.push_back((id, Reply::Done));
            }
            BASIC_ACK | BASIC_NACK => {
                let tag = r.u64()?;
                let multiple = r.u8()? & 1 == 1;
                let reply =
                    if method == BASIC_ACK { Reply::Enqueued { id: None } } else { Reply::Error("basic.nack".into()) };
                let mut any = false;
                while let Some(&(front, id)) = self.confirms.front() {
                    if front > tag || (!multiple && front != tag) {
                        break;
                    }
                    self.confirms.pop_front();
                    self.ready.push_back((id, reply.clone()));
                    any = true;
                }
                if !any && !multiple {
                    // A single confirm out of tag order (RabbitMQ does not do
                    // this for one queue, but AMQP allows it).
                    let at =
                        self.confirms.iter().position(|&(t, _)| t == tag).ok_or_else(|| {
                            ProtocolError(format!("AMQP confirm of delivery tag {tag}, never published"))
                        })?;
                    let (_, id) = self.confirms.remove(at).expect("position found");
                    self.ready.push_back((id, reply));
                }
            }
            BASIC_DELIVER => {
                r.short_string()?; // consumer tag
                let tag = r.u64()?;
                self.content = Content::Header { tag };
            }
            CONNECTION_CLOSE | CHANNEL_CLOSE => {
                let code = r.u16()?;
                let text = r.short_string()?;
                return Err(ProtocolError(format!(
                    "RabbitMQ closed the {}: {code} {}",
                    if method == CONNECTION_CLOSE { "connection" } else { "channel" },
                    String::from_utf8_lossy(text)
                )));
            }
            // A memory or disk alarm: publishes wait, which the figures show.
            CONNECTION_BLOCKED | CONNECTION_UNBLOCKED => {}
            other => return Err(ProtocolError(format!("unexpected AMQP method {other:?}"))),
        }
        Ok(())
    }
}

impl Codec for AmqpCodec {
    fn new(params: &CodecParams) -> AmqpCodec {
        AmqpCodec {
            queue: params.queue.clone(),
            publish: AmqpCodec::encode_publish(&params.queue, &params.payload, FRAME_BYTES_MAX),
            publish_frame_max: FRAME_BYTES_MAX,
            payload: params.payload.clone(),
            prefetch: params.prefetch.clamp(1, u16::MAX as usize) as u16,
            frame_max: FRAME_BYTES_MAX,
            methods: VecDeque::new(),
            next_publish_tag: 1,
            confirms: VecDeque::new(),
            dequeues: VecDeque::new(),
            early: VecDeque::new(),
            ready: VecDeque::new(),
            content: Content::None,
        }
    }

    fn handshake(&self, role: Role) -> Vec<Req> {
        let mut steps = vec![STEP_HEADER, STEP_START_OK, STEP_TUNE_OK_OPEN, STEP_CHANNEL];
        match role {
            Role::Producer => steps.push(STEP_CONFIRMS),
            Role::Consumer => steps.extend([STEP_QOS, STEP_CONSUME]),
            Role::Both => steps.extend([STEP_CONFIRMS, STEP_DECLARE]),
        }
        steps.into_iter().map(Req::Step).collect()
    }

    fn in_order(&self) -> bool {
        false
    }

    fn encode(&mut self, req: &Req, request_id: u64, out: &mut Vec<u8>) {
        match req {
            Req::Enqueue => {
                if self.publish_frame_max != self.frame_max {
                    // The broker asked for smaller frames than we encoded for.
                    self.publish = AmqpCodec::encode_publish(&self.queue, &self.payload, self.frame_max);
                    self.publish_frame_max = self.frame_max;
                }
                out.extend_from_slice(&self.publish);
                self.confirms.push_back((self.next_publish_tag, request_id));
                self.next_publish_tag += 1;
            }
            Req::Dequeue => match self.early.pop_front() {
                Some(tag) => {
                    self.ready.push_back((request_id, Reply::Leased { handle: Handle::Id(tag), join_slot: None }))
                }
                None => self.dequeues.push_back(request_id),
            },
            Req::Complete { handle: Handle::Id(tag), .. } => {
                let mut args = tag.to_be_bytes().to_vec();
                args.push(0); // not multiple
                AmqpCodec::method_frame(out, CHANNEL, BASIC_ACK, &args);
                self.ready.push_back((request_id, Reply::Done));
            }
            Req::Step(step) => {
                self.methods.push_back(request_id);
                match *step {
                    STEP_HEADER => out.extend_from_slice(PROTOCOL_HEADER),
                    STEP_START_OK => {
                        let mut args = Vec::new();
                        args.extend_from_slice(&0u32.to_be_bytes()); // client properties: none
                        short_string(&mut args, "PLAIN");
                        long_string(&mut args, b"\0guest\0guest");
                        short_string(&mut args, "en_US");
                        AmqpCodec::method_frame(out, 0, CONNECTION_START_OK, &args);
                    }
                    STEP_TUNE_OK_OPEN => {
                        let mut args = Vec::new();
                        args.extend_from_slice(&CHANNEL.to_be_bytes());
                        args.extend_from_slice(&self.frame_max.to_be_bytes());
                        // No heartbeats: a run lasts seconds, and a heartbeat
                        // would be one more thing for the codec to answer.
                        args.extend_from_slice(&0u16.to_be_bytes());
                        AmqpCodec::method_frame(out, 0, CONNECTION_TUNE_OK, &args);
                        let mut args = Vec::new();
                        short_string(&mut args, "/");
                        short_string(&mut args, "");
                        args.push(0);
                        AmqpCodec::method_frame(out, 0, CONNECTION_OPEN, &args);
                    }
                    STEP_CHANNEL => AmqpCodec::method_frame(out, CHANNEL, CHANNEL_OPEN, &[0]),
                    STEP_CONFIRMS => AmqpCodec::method_frame(out, CHANNEL, CONFIRM_SELECT, &[0]),
                    STEP_DECLARE => {
                        let mut args = vec![0, 0];
                        short_string(&mut args, &self.queue);
                        args.push(0b0000_0010); // durable (not passive, exclusive, auto-delete, no-wait)
                        let mut table = Vec::new();
                        short_string(&mut table, "x-queue-type");
                        table.push(b'S');
                        long_string(&mut table, b"quorum");
                        args.extend_from_slice(&(table.len() as u32).to_be_bytes());
                        args.extend_from_slice(&table);
                        AmqpCodec::method_frame(out, CHANNEL, QUEUE_DECLARE, &args);
                    }
                    STEP_QOS => {
                        let mut args = 0u32.to_be_bytes().to_vec();
                        args.extend_from_slice(&self.prefetch.to_be_bytes());
                        args.push(0); // per consumer
                        AmqpCodec::method_frame(out, CHANNEL, BASIC_QOS, &args);
                    }
                    STEP_CONSUME => {
                        let mut args = vec![0, 0];
                        short_string(&mut args, &self.queue);
                        short_string(&mut args, "");
                        args.push(0); // manual acks; not exclusive; wait for consume-ok
                        args.extend_from_slice(&0u32.to_be_bytes());
                        AmqpCodec::method_frame(out, CHANNEL, BASIC_CONSUME, &args);
                    }
                    other => unreachable!("no AMQP handshake step {other}"),
                }
            }
            _ => unreachable!("not an AMQP request: {req:?}"),
        }
    }

    fn decode(
        &mut self,
        input: &mut BytesMut,
        _front: Option<&Req>,
    ) -> Result<Option<(Option<u64>, Reply)>, ProtocolError> {
        loop {
            if let Some((id, reply)) = self.ready.pop_front() {
                return Ok(Some((Some(id), reply)));
            }
            if input.len() < 7 {
                if input.starts_with(b"AMQP") {
                    return Err(ProtocolError("RabbitMQ refused the protocol version".into()));
                }
                return Ok(None);
            }
            if input.starts_with(b"AMQP") {
                return Err(ProtocolError("RabbitMQ refused the protocol version".into()));
            }
            let kind = input[0];
            let size = u32::from_be_bytes([input[3], input[4], input[5], input[6]]) as usize;
            if size > FRAME_BYTES_LIMIT {
                return Err(ProtocolError(format!("AMQP frame of {size} bytes")));
            }
            if input.len() < size + FRAME_OVERHEAD_BYTES {
                return Ok(None);
            }
            if input[7 + size] != FRAME_END {
                return Err(ProtocolError("AMQP frame without its end octet".into()));
            }
            let frame = input.split_to(size + FRAME_OVERHEAD_BYTES);
            self.on_frame(kind, &frame[7..7 + size])?;
        }
    }
}

fn frame(out: &mut Vec<u8>, kind: u8, channel: u16, payload: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(FRAME_END);
}

fn short_string(out: &mut Vec<u8>, text: &str) {
    debug_assert!(text.len() <= 255);
    out.push(text.len() as u8);
    out.extend_from_slice(text.as_bytes());
}

fn long_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Reads a method's arguments; running short is a protocol error.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.bytes.len() < n {
            return Err(ProtocolError("AMQP frame shorter than its method".into()));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ProtocolError> {
        Ok(self.take(2)?.get_u16())
    }
    fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(self.take(4)?.get_u32())
    }
    fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(self.take(8)?.get_u64())
    }
    fn short_string(&mut self) -> Result<&'a [u8], ProtocolError> {
        let n = self.u8()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> AmqpCodec {
        AmqpCodec::new(&CodecParams {
            addr: String::new(),
            queue: "bench".into(),
            payload: Bytes::from_static(b"hello"),
            payload_bytes: 5,
            batch: 1,
            reliable: false,
            dequeue_wait_ms: 0,
            prefetch: 1,
            token: None,
            connector: Default::default(),
        })
    }

    fn method(channel: u16, m: (u16, u16), args: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        AmqpCodec::method_frame(&mut out, channel, m, args);
        out
    }

    /// Feeds `bytes` one byte at a time; returns every reply.
    fn feed(codec: &mut AmqpCodec, bytes: &[u8]) -> Vec<(Option<u64>, Reply)> {
        let mut input = BytesMut::new();
        let mut replies = Vec::new();
        for &b in bytes {
            input.extend_from_slice(&[b]);
            while let Some(reply) = codec.decode(&mut input, None).unwrap() {
                replies.push(reply);
            }
        }
        assert!(input.is_empty());
        replies
    }

    #[test]
    fn a_publish_is_method_header_and_body_frames() {
        let mut codec = codec();
        let mut out = Vec::new();
        codec.encode(&Req::Enqueue, 7, &mut out);
        let mut expected = method(1, BASIC_PUBLISH, b"\0\0\0\x05bench\0");
        expected.extend_from_slice(b"\x02\0\x01\0\0\0\x0f\0\x3c\0\0\0\0\0\0\0\0\0\x05\x10\0\x02\xce");
        expected.extend_from_slice(b"\x03\0\x01\0\0\0\x05hello\xce");
        assert_eq!(out, expected);
        // A body longer than a frame is split.
        let long = AmqpCodec::encode_publish("q", &[b'x'; 20], 18);
        assert_eq!(long.iter().filter(|&&b| b == FRAME_END).count(), 2 + 2);
    }

    #[test]
    fn confirms_answer_publishes_singly_and_multiple() {
        let mut codec = codec();
        let mut out = Vec::new();
        for id in 10..14 {
            codec.encode(&Req::Enqueue, id, &mut out);
        }
        let mut stream = method(1, BASIC_ACK, b"\0\0\0\0\0\0\0\x02\x01"); // tags 1, 2
        stream.extend(method(1, BASIC_NACK, b"\0\0\0\0\0\0\0\x04\x00")); // tag 4, out of order
        stream.extend(method(1, BASIC_ACK, b"\0\0\0\0\0\0\0\x03\x00")); // tag 3
        let replies = feed(&mut codec, &stream);
        let enqueued = Reply::Enqueued { id: None };
        assert_eq!(
            replies,
            vec![
                (Some(10), enqueued.clone()),
                (Some(11), enqueued.clone()),
                (Some(13), Reply::Error("basic.nack".into())),
                (Some(12), enqueued),
            ]
        );
        let mut input = BytesMut::from(&method(1, BASIC_ACK, b"\0\0\0\0\0\0\0\x09\x00")[..]);
        assert!(codec.decode(&mut input, None).is_err(), "a confirm of a tag never published");
    }

    #[test]
    fn deliveries_answer_dequeues_and_acks_answer_themselves() {
        let mut codec = codec();
        let mut out = Vec::new();
        let deliver = |tag: u8| {
            let mut args = b"\x03ctg\0\0\0\0\0\0\0".to_vec();
            args.push(tag);
            args.extend_from_slice(b"\0\0\x05bench");
            let mut bytes = method(1, BASIC_DELIVER, &args);
            bytes.extend_from_slice(b"\x02\0\x01\0\0\0\x0e\0\x3c\0\0\0\0\0\0\0\0\0\x05\0\0\xce");
            bytes.extend_from_slice(b"\x03\0\x01\0\0\0\x05hello\xce");
            bytes
        };
        // A delivery before any dequeue waits for one.
        assert!(feed(&mut codec, &deliver(1)).is_empty());
        codec.encode(&Req::Dequeue, 5, &mut out);
        codec.encode(&Req::Dequeue, 6, &mut out);
        assert!(out.is_empty(), "a dequeue sends nothing");
        let leased = |tag| Reply::Leased { handle: Handle::Id(tag), join_slot: None };
        assert_eq!(feed(&mut codec, &deliver(2)), vec![(Some(5), leased(1)), (Some(6), leased(2))]);
        codec.encode(&Req::Complete { handle: Handle::Id(2), join_slot: None }, 7, &mut out);
        assert_eq!(out, method(1, BASIC_ACK, b"\0\0\0\0\0\0\0\x02\0"));
        let mut empty = BytesMut::new();
        assert_eq!(codec.decode(&mut empty, None).unwrap(), Some((Some(7), Reply::Done)));
        assert_eq!(codec.decode(&mut empty, None).unwrap(), None);
    }

    #[test]
    fn the_handshake_negotiates_and_declares_a_quorum_queue() {
        let mut codec = codec();
        let steps = codec.handshake(Role::Both);
        assert_eq!(steps.len(), 6);
        let mut out = Vec::new();
        codec.encode(&steps[0], 1, &mut out);
        assert_eq!(out, PROTOCOL_HEADER);
        let start = method(0, CONNECTION_START, b"\0\x09\0\0\0\0\0\0\0\x05PLAIN\0\0\0\x05en_US");
        assert_eq!(feed(&mut codec, &start), vec![(Some(1), Reply::Done)]);
        out.clear();
        codec.encode(&steps[1], 2, &mut out);
        assert!(out.windows(12).any(|w| w == b"\0guest\0guest"));
        let tune = method(0, CONNECTION_TUNE, b"\x07\xff\0\0\x10\0\0\x3c");
        assert_eq!(feed(&mut codec, &tune), vec![(Some(2), Reply::Done)]);
        assert_eq!(codec.frame_max, 4096);
        out.clear();
        codec.encode(&steps[5], 3, &mut out);
        assert!(out.windows(6).any(|w| w == b"quorum"));
        let close = method(1, CHANNEL_CLOSE, b"\x01\x96\x0cPRECONDITION\0\x32\0\x0a");
        let mut input = BytesMut::from(&close[..]);
        let err = codec.decode(&mut input, None).unwrap_err();
        assert!(err.0.contains("406"), "{err}");
    }

    #[test]
    fn malformed_frames_are_protocol_errors() {
        let mut codec = codec();
        for bad in [&b"\x01\0\x01\0\0\0\x04\0\x3c\0\x50\x00"[..], b"\x09\0\0\0\0\0\0\xce", b"AMQP\0\0\x09\x01"] {
            let mut input = BytesMut::from(bad);
            assert!(codec.decode(&mut input, None).is_err(), "{bad:?}");
        }
    }
}
