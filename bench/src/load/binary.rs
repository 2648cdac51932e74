//! `tqx-binary`: the TaskQueueX binary protocol (docs/wire.md), encoded and
//! decoded with `tqx-wire`, the reference codec, on a raw connection (not
//! `tqx-client`, whose reconnect machinery no other system's client would have).
//!
//! Requests whose bytes never change but for the request id (enqueue, batch,
//! dequeue) are encoded once with `Request::encode` and then copied with the id
//! patched in, as the other protocols copy their fixed request bytes.

use bytes::{Bytes, BytesMut};
use tqx_wire::{take_frame, Dep, QueuePatch, Request, Response, Secret, TaskSpec, HEADER_BYTES};

use super::codec::{join_payload, join_slot, Codec, CodecParams, Handle, ProtocolError, Reply, Req, Role};
use super::DEPS_CHILDREN;

/// The largest reply body accepted. Replies here are small (a dequeue of one
/// task, a task view); this bounds the receive buffer if a server misbehaves.
const REPLY_BODY_BYTES_MAX: usize = 16 << 20;

/// Offset of `request_id` in the frame header (docs/wire.md, Frame).
const REQUEST_ID_OFFSET: usize = 16;

pub(crate) struct BinaryCodec {
    queue: String,
    dequeue_wait_ms: u64,
    payload: Bytes,
    payload_bytes: usize,
    token: Option<Bytes>,
    enqueue: Vec<u8>,
    batch: Vec<u8>,
    dequeue: Vec<u8>,
}

impl BinaryCodec {
    fn plain_task(&self) -> TaskSpec {
        TaskSpec { payload: self.payload.clone(), ..TaskSpec::default() }
    }

    fn request(&self, req: &Req) -> Request {
        let queue = self.queue.clone();
        match req {
            Req::Hello => Request::Hello { version_min: 1, version_max: 1 },
            Req::Auth => Request::Auth { token: Secret::new(self.token.clone().unwrap_or_default()) },
            Req::Ping => Request::Ping,
            Req::Configure { retention_ms } => Request::ConfigureQueue {
                queue,
                patch: QueuePatch { retention_ms: Some(*retention_ms), ..QueuePatch::default() },
            },
            Req::Enqueue | Req::DepParent { .. } => Request::Enqueue { queue, task: self.plain_task() },
            Req::EnqueueBatch => unreachable!("EnqueueBatch is encoded from its template"),
            Req::PreloadBatch { count } => {
                Request::EnqueueBatch { queue, tasks: (0..*count).map(|_| self.plain_task()).collect() }
            }
            Req::Dequeue => {
                Request::Dequeue { queues: vec![queue], max: 1, lease_ms: None, wait_ms: self.dequeue_wait_ms }
            }
            Req::Complete { handle: Handle::Lease { id, lease }, .. } => {
                Request::Complete { id: *id, lease: *lease, result: None }
            }
            Req::Status { id } => Request::GetTask { id: *id },
            Req::DepChildren { parent, .. } => Request::EnqueueBatch {
                queue,
                tasks: (0..DEPS_CHILDREN)
                    .map(|_| TaskSpec { depends_on: vec![Dep::Task(*parent)], ..self.plain_task() })
                    .collect(),
            },
            Req::DepJoin { slot, children } => Request::Enqueue {
                queue,
                task: TaskSpec {
                    payload: Bytes::from(join_payload(self.payload_bytes, *slot)),
                    depends_on: children.iter().map(|&id| Dep::Task(id)).collect(),
                    ..TaskSpec::default()
                },
            },
            Req::Complete { .. }
            | Req::Step(_)
            | Req::UseTube
            | Req::WatchTube
            | Req::IgnoreDefault
            | Req::PreloadStatus { .. } => {
                unreachable!("not a TaskQueueX request: {req:?}")
            }
        }
    }
}

/// Appends `template` (a whole frame encoded with request id 0) with
/// `request_id` patched into its header.
fn copy_with_id(template: &[u8], request_id: u64, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(template);
    out[start + REQUEST_ID_OFFSET..start + REQUEST_ID_OFFSET + 8].copy_from_slice(&request_id.to_le_bytes());
}

impl Codec for BinaryCodec {
    fn new(params: &CodecParams) -> BinaryCodec {
        let mut codec = BinaryCodec {
            queue: params.queue.clone(),
            dequeue_wait_ms: params.dequeue_wait_ms,
            payload: params.payload.clone(),
            payload_bytes: params.payload_bytes,
            token: params.token.as_ref().map(|t| Bytes::from(t.clone().into_bytes())),
            enqueue: Vec::new(),
            batch: Vec::new(),
            dequeue: Vec::new(),
        };
        codec.request(&Req::Enqueue).encode(0, &mut codec.enqueue);
        codec.request(&Req::PreloadBatch { count: params.batch }).encode(0, &mut codec.batch);
        codec.request(&Req::Dequeue).encode(0, &mut codec.dequeue);
        codec
    }

    /// `hello`, then `auth` when the run has a token (docs/wire.md,
    /// Connection lifecycle).
    fn handshake(&self, _role: Role) -> Vec<Req> {
        match self.token {
            Some(_) => vec![Req::Hello, Req::Auth],
            None => vec![Req::Hello],
        }
    }

    fn in_order(&self) -> bool {
        false
    }

    fn encode(&mut self, req: &Req, request_id: u64, out: &mut Vec<u8>) {
        match req {
            Req::Enqueue | Req::DepParent { .. } => copy_with_id(&self.enqueue, request_id, out),
            Req::EnqueueBatch => copy_with_id(&self.batch, request_id, out),
            Req::Dequeue => copy_with_id(&self.dequeue, request_id, out),
            _ => self.request(req).encode(request_id, out),
        }
    }

    fn decode(
        &mut self,
        input: &mut BytesMut,
        _front: Option<&Req>,
    ) -> Result<Option<(Option<u64>, Reply)>, ProtocolError> {
        let Some((header, body)) = take_frame(input, REPLY_BODY_BYTES_MAX).map_err(|e| ProtocolError(e.to_string()))?
        else {
            return Ok(None);
        };
        if !header.is_reply() {
            return Err(ProtocolError("a frame without the reply flag".into()));
        }
        let request_id = header.request_id.get();
        let response = Response::decode(&header, body).map_err(|e| ProtocolError(format!("undecodable reply: {e}")))?;
        let reply = match response {
            Response::Pong { ready: false } => Reply::NotReady,
            Response::Enqueued(e) => Reply::Enqueued { id: Some(e.id) },
            Response::EnqueuedBatch(tasks) => Reply::EnqueuedBatch { ids: tasks.iter().map(|t| t.id).collect() },
            Response::Leased(tasks) => match tasks.first() {
                None => Reply::Empty,
                Some(task) => Reply::Leased {
                    handle: Handle::Lease { id: task.id, lease: task.lease },
                    join_slot: join_slot(&task.payload),
                },
            },
            Response::Error { code, message } => Reply::Error(format!("{}: {message}", code.as_str())),
            _ => Reply::Done,
        };
        Ok(Some((Some(request_id), reply)))
    }
}

const _: () = assert!(REQUEST_ID_OFFSET + 8 == HEADER_BYTES);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::codec::payload;
    use tqx_wire::{Enqueued, ErrorCode, LeasedTask, Opcode, TaskState};

    fn params() -> CodecParams {
        CodecParams {
            addr: "127.0.0.1:1".into(),
            queue: "bench".into(),
            payload: Bytes::from(payload(16)),
            payload_bytes: 16,
            batch: 3,
            reliable: false,
            dequeue_wait_ms: 0,
            prefetch: 1,
            token: None,
            connector: Default::default(),
        }
    }

    fn reply_bytes(response: &Response, opcode: Opcode, request_id: u64) -> Vec<u8> {
        let mut out = Vec::new();
        response.encode(opcode as u8, request_id, &mut out);
        out
    }

    #[test]
    fn templated_requests_equal_fresh_encodings() {
        let mut codec = BinaryCodec::new(&params());
        let task = TaskSpec { payload: Bytes::from(payload(16)), ..TaskSpec::default() };
        let cases = [
            (Req::Enqueue, Request::Enqueue { queue: "bench".into(), task: task.clone() }),
            (Req::EnqueueBatch, Request::EnqueueBatch { queue: "bench".into(), tasks: vec![task; 3] }),
            (Req::Dequeue, Request::Dequeue { queues: vec!["bench".into()], max: 1, lease_ms: None, wait_ms: 0 }),
        ];
        for (req, request) in cases {
            let mut ours = Vec::new();
            codec.encode(&req, 0x0102_0304_0506_0708, &mut ours);
            let mut expected = Vec::new();
            request.encode(0x0102_0304_0506_0708, &mut expected);
            assert_eq!(ours, expected, "{req:?}");
        }
    }

    #[test]
    fn deps_requests_name_their_dependencies() {
        let mut codec = BinaryCodec::new(&params());
        let mut out = Vec::new();
        codec.encode(&Req::DepChildren { parent: 7, slot: 0 }, 1, &mut out);
        let mut buffer = BytesMut::from(&out[..]);
        let (header, body) = take_frame(&mut buffer, usize::MAX).unwrap().unwrap();
        let Request::EnqueueBatch { tasks, .. } = Request::decode(&header, body).unwrap() else { panic!() };
        assert_eq!(tasks.len(), DEPS_CHILDREN);
        assert!(tasks.iter().all(|t| t.depends_on == [Dep::Task(7)]));

        out.clear();
        codec.encode(&Req::DepJoin { slot: 3, children: vec![8, 9] }, 2, &mut out);
        let mut buffer = BytesMut::from(&out[..]);
        let (header, body) = take_frame(&mut buffer, usize::MAX).unwrap().unwrap();
        let Request::Enqueue { task, .. } = Request::decode(&header, body).unwrap() else { panic!() };
        assert_eq!(task.depends_on, [Dep::Task(8), Dep::Task(9)]);
        assert_eq!(join_slot(&task.payload), Some(3));
    }

    #[test]
    fn replies_decode_byte_by_byte() {
        let mut codec = BinaryCodec::new(&params());
        let leased = LeasedTask {
            id: 7,
            queue: "bench".into(),
            payload: Bytes::from(join_payload(16, 5)),
            priority: 0,
            group: None,
            attempt: 1,
            lease: 99,
            lease_expires_at_ms: 1,
        };
        let mut stream = Vec::new();
        stream.extend(reply_bytes(
            &Response::Enqueued(Enqueued { id: 42, state: TaskState::Ready, created: true }),
            Opcode::Enqueue,
            2,
        ));
        stream.extend(reply_bytes(&Response::Leased(vec![leased]), Opcode::Dequeue, 1));
        stream.extend(reply_bytes(&Response::Leased(vec![]), Opcode::Dequeue, 3));
        stream.extend(reply_bytes(&Response::error(ErrorCode::Overloaded, "busy"), Opcode::Enqueue, 4));
        let mut buffer = BytesMut::new();
        let mut replies = Vec::new();
        for &b in &stream {
            buffer.extend_from_slice(&[b]);
            while let Some(r) = codec.decode(&mut buffer, None).unwrap() {
                replies.push(r);
            }
        }
        assert!(buffer.is_empty());
        assert_eq!(replies.len(), 4);
        assert_eq!(replies[0], (Some(2), Reply::Enqueued { id: Some(42) }));
        assert_eq!(
            replies[1],
            (Some(1), Reply::Leased { handle: Handle::Lease { id: 7, lease: 99 }, join_slot: Some(5) })
        );
        assert_eq!(replies[2], (Some(3), Reply::Empty));
        assert!(matches!(&replies[3], (Some(4), Reply::Error(m)) if m.contains("busy")));
    }

    #[test]
    fn a_token_is_an_auth_after_hello() {
        let mut codec = BinaryCodec::new(&params());
        assert_eq!(codec.handshake(Role::Producer), vec![Req::Hello], "no token: hello alone");
        let mut codec_with_token = BinaryCodec::new(&CodecParams { token: Some("tqx_secret".into()), ..params() });
        assert_eq!(codec_with_token.handshake(Role::Consumer), vec![Req::Hello, Req::Auth]);
        let mut ours = Vec::new();
        codec_with_token.encode(&Req::Auth, 2, &mut ours);
        let mut expected = Vec::new();
        Request::Auth { token: Secret::new(&b"tqx_secret"[..]) }.encode(2, &mut expected);
        assert_eq!(ours, expected);
        // The server's acceptance is a plain success to the handshake.
        let mut buffer = BytesMut::from(
            &reply_bytes(&Response::Authenticated { scopes: tqx_wire::SCOPE_ADMIN }, Opcode::Auth, 2)[..],
        );
        assert_eq!(codec.decode(&mut buffer, None).unwrap(), Some((Some(2), Reply::Done)));
    }

    #[test]
    fn a_request_frame_from_the_server_is_a_protocol_error() {
        let mut codec = BinaryCodec::new(&params());
        let mut out = Vec::new();
        Request::Ping.encode(1, &mut out);
        let mut buffer = BytesMut::from(&out[..]);
        assert!(codec.decode(&mut buffer, None).is_err());
        let mut garbage = BytesMut::from(&b"HTTP/1.1 400"[..]);
        assert!(codec.decode(&mut garbage, None).is_err());
    }
}
