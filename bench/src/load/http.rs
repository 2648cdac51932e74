//! `tqx-http`: TaskQueueX's HTTP/JSON API (docs/http-api.md) over HTTP/1.1
//! keep-alive connections, with request bytes written by hand as `wrk` sends
//! them (request line, `Host`, `Content-Type`, `Content-Length`, body) and
//! replies parsed for their status line and `Content-Length` only.
//!
//! The few fields a workload needs from a body (a task id, a lease token, the
//! ids of a batch, whether a dequeue was empty, a join payload) are found by
//! searching for their key, not by parsing the JSON: the server writes these
//! bodies by hand in a fixed member order (src/http/render.rs), the payloads are
//! ours and contain no such key, and a full parse would cost the load
//! generator's single core more than the server's reply takes to write.

use bytes::{Buf, BytesMut};

use super::codec::{find, join_payload, parse_u64, Codec, CodecParams, Handle, ProtocolError, Reply, Req, Role};
use super::DEPS_CHILDREN;

/// Reply heads are small; more headers than this is not our server.
const HEADERS_MAX: usize = 32;
/// The largest reply body accepted (see `binary::REPLY_BODY_BYTES_MAX`).
const REPLY_BODY_BYTES_MAX: usize = 16 << 20;
/// A head not complete within this many bytes is not a reply we can parse.
const REPLY_HEAD_BYTES_MAX: usize = 64 << 10;

pub(crate) struct HttpCodec {
    /// Every request's header lines but the body's: `Host`, and
    /// `Authorization: Bearer` when the run has a token (each ending in CRLF).
    headers: String,
    queue: String,
    payload: Vec<u8>,
    payload_bytes: usize,
    enqueue: Vec<u8>,
    batch: Vec<u8>,
    dequeue: Vec<u8>,
    body: Vec<u8>,
}

/// The header lines every request carries: `Host`, and the token's
/// `Authorization: Bearer` when there is one (docs/http-api.md).
fn common_headers(host: &str, token: Option<&str>) -> String {
    let mut headers = format!("Host: {host}\r\n");
    if let Some(token) = token {
        headers.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    headers
}

/// Appends one request: request line, `headers` (see [`common_headers`]),
/// and the body if any.
fn request(out: &mut Vec<u8>, method: &str, path: &str, headers: &str, body: Option<&[u8]>) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    out.extend_from_slice(headers.as_bytes());
    if let Some(body) = body {
        out.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body);
    } else {
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `{"payload":P` + `extra` + `}`: one task of an enqueue body.
fn task_body(out: &mut Vec<u8>, payload: &[u8], depends_on: &[u64]) {
    out.extend_from_slice(br#"{"payload":"#);
    out.extend_from_slice(payload);
    if !depends_on.is_empty() {
        out.extend_from_slice(br#","depends_on":["#);
        for (i, id) in depends_on.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(id.to_string().as_bytes());
            out.push(b'"');
        }
        out.push(b']');
    }
    out.push(b'}');
}

/// Appends a batch body of `count` tasks: `{"tasks":[...]}`.
fn batch_body(out: &mut Vec<u8>, payload: &[u8], count: usize, depends_on: &[u64]) {
    out.extend_from_slice(br#"{"tasks":["#);
    for i in 0..count {
        if i > 0 {
            out.push(b',');
        }
        task_body(out, payload, depends_on);
    }
    out.extend_from_slice(b"]}");
}

/// The u64 after `"key":` (written as a JSON string or number, whitespace
/// allowed), searching from the start or, with `last`, from the end.
fn number_after(body: &[u8], key: &[u8], last: bool) -> Option<u64> {
    let start = if last { body.windows(key.len()).rposition(|w| w == key)? } else { find(body, key)? };
    let rest = &body[start + key.len()..];
    let skip = rest.iter().take_while(|b| b.is_ascii_whitespace() || **b == b'"').count();
    parse_u64(&rest[skip..]).map(|(value, _)| value)
}

/// The ids of `{"ids":["8","9"],...}`.
fn ids_of(body: &[u8]) -> Option<Vec<u64>> {
    let start = find(body, br#""ids":["#)? + br#""ids":["#.len();
    let end = start + body[start..].iter().position(|&b| b == b']')?;
    let mut ids = Vec::new();
    let mut rest = &body[start..end];
    loop {
        let skip = rest.iter().take_while(|b| matches!(b, b' ' | b'"' | b',' | b'\n' | b'\r' | b'\t')).count();
        rest = &rest[skip..];
        if rest.is_empty() {
            return Some(ids);
        }
        let (id, len) = parse_u64(rest)?;
        ids.push(id);
        rest = &rest[len..];
    }
}

impl HttpCodec {
    fn interpret(&self, status: u16, body: &[u8], front: &Req) -> Reply {
        if !(200..300).contains(&status) {
            if status == 503 && *front == Req::Ping {
                return Reply::NotReady;
            }
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
            return Reply::Error(format!("HTTP {status}: {text}"));
        }
        match front {
            Req::Enqueue | Req::DepParent { .. } | Req::DepJoin { .. } => {
                Reply::Enqueued { id: number_after(body, br#""id":"#, false) }
            }
            Req::EnqueueBatch => Reply::EnqueuedBatch { ids: Vec::new() },
            Req::PreloadBatch { .. } | Req::DepChildren { .. } => match ids_of(body) {
                Some(ids) => Reply::EnqueuedBatch { ids },
                None => Reply::Error("batch reply without ids".into()),
            },
            Req::Dequeue => {
                if find(body, br#""tasks":[]"#).is_some() {
                    return Reply::Empty;
                }
                // The id is the task's first member; the lease comes after the
                // payload, hence the search from the end.
                let id = number_after(body, br#""id":"#, false);
                let lease = number_after(body, br#""lease":"#, true);
                match (id, lease) {
                    (Some(id), Some(lease)) => Reply::Leased {
                        handle: Handle::Lease { id, lease },
                        join_slot: number_after(body, br#""payload":{"j":"#, false),
                    },
                    _ => Reply::Error("dequeue reply without an id or lease".into()),
                }
            }
            _ => Reply::Done,
        }
    }
}

impl Codec for HttpCodec {
    fn new(params: &CodecParams) -> HttpCodec {
        let mut codec = HttpCodec {
            headers: common_headers(&params.addr, params.token.as_deref()),
            queue: params.queue.clone(),
            payload: params.payload.to_vec(),
            payload_bytes: params.payload_bytes,
            enqueue: Vec::new(),
            batch: Vec::new(),
            dequeue: Vec::new(),
            body: Vec::new(),
        };
        let mut body = Vec::new();
        task_body(&mut body, &codec.payload, &[]);
        request(&mut codec.enqueue, "POST", &format!("/v1/queues/{}/tasks", codec.queue), &codec.headers, Some(&body));
        body.clear();
        batch_body(&mut body, &codec.payload, params.batch, &[]);
        request(
            &mut codec.batch,
            "POST",
            &format!("/v1/queues/{}/tasks/batch", codec.queue),
            &codec.headers,
            Some(&body),
        );
        let body = if params.dequeue_wait_ms == 0 {
            format!(r#"{{"queues":["{}"],"max":1}}"#, codec.queue)
        } else {
            format!(r#"{{"queues":["{}"],"max":1,"wait_ms":{}}}"#, codec.queue, params.dequeue_wait_ms)
        };
        request(&mut codec.dequeue, "POST", "/v1/dequeue", &codec.headers, Some(body.as_bytes()));
        codec
    }

    fn handshake(&self, _role: Role) -> Vec<Req> {
        Vec::new()
    }

    fn in_order(&self) -> bool {
        true
    }

    fn encode(&mut self, req: &Req, _request_id: u64, out: &mut Vec<u8>) {
        let headers = &self.headers;
        let queue = &self.queue;
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        match req {
            Req::Enqueue | Req::DepParent { .. } => out.extend_from_slice(&self.enqueue),
            Req::EnqueueBatch => out.extend_from_slice(&self.batch),
            Req::Dequeue => out.extend_from_slice(&self.dequeue),
            Req::Ping => request(out, "GET", "/healthz", headers, None),
            Req::Configure { retention_ms } => {
                let body = format!(r#"{{"retention_ms":{retention_ms}}}"#);
                request(out, "PUT", &format!("/v1/queues/{queue}"), headers, Some(body.as_bytes()));
            }
            Req::PreloadBatch { count } => {
                batch_body(&mut body, &self.payload, *count, &[]);
                request(out, "POST", &format!("/v1/queues/{queue}/tasks/batch"), headers, Some(&body));
            }
            Req::Complete { handle: Handle::Lease { id, lease }, .. } => {
                let body = format!(r#"{{"lease":"{lease}"}}"#);
                request(out, "POST", &format!("/v1/tasks/{id}/complete"), headers, Some(body.as_bytes()));
            }
            Req::Status { id } => request(out, "GET", &format!("/v1/tasks/{id}"), headers, None),
            Req::DepChildren { parent, .. } => {
                batch_body(&mut body, &self.payload, DEPS_CHILDREN, &[*parent]);
                request(out, "POST", &format!("/v1/queues/{queue}/tasks/batch"), headers, Some(&body));
            }
            Req::DepJoin { slot, children } => {
                task_body(&mut body, &join_payload(self.payload_bytes, *slot), children);
                request(out, "POST", &format!("/v1/queues/{queue}/tasks"), headers, Some(&body));
            }
            Req::Hello
            | Req::Auth
            | Req::UseTube
            | Req::WatchTube
            | Req::IgnoreDefault
            | Req::PreloadStatus { .. }
            | Req::Complete { .. }
            | Req::Step(_) => unreachable!("not a TaskQueueX HTTP request: {req:?}"),
        }
        self.body = body;
    }

    fn decode(
        &mut self,
        input: &mut BytesMut,
        front: Option<&Req>,
    ) -> Result<Option<(Option<u64>, Reply)>, ProtocolError> {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut response = httparse::Response::new(&mut headers);
        let head_bytes = match response.parse(input) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if input.len() > REPLY_HEAD_BYTES_MAX => {
                return Err(ProtocolError("reply head too large".into()));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(ProtocolError(format!("bad HTTP reply: {e}"))),
        };
        let status = response.code.unwrap_or(0);
        let mut body_bytes = 0;
        for header in response.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                body_bytes = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or_else(|| ProtocolError("bad Content-Length".into()))?;
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(ProtocolError("chunked replies are not expected".into()));
            }
        }
        if body_bytes > REPLY_BODY_BYTES_MAX {
            return Err(ProtocolError(format!("reply body of {body_bytes} bytes")));
        }
        if input.len() < head_bytes + body_bytes {
            return Ok(None);
        }
        let Some(front) = front else {
            return Err(ProtocolError("a reply to no request".into()));
        };
        let reply = self.interpret(status, &input[head_bytes..head_bytes + body_bytes], front);
        input.advance(head_bytes + body_bytes);
        Ok(Some((None, reply)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::codec::payload;
    use bytes::Bytes;

    fn codec() -> HttpCodec {
        codec_with(None)
    }

    fn codec_with(token: Option<&str>) -> HttpCodec {
        HttpCodec::new(&CodecParams {
            addr: "127.0.0.1:7700".into(),
            queue: "bench".into(),
            payload: Bytes::from(payload(10)),
            payload_bytes: 10,
            batch: 2,
            reliable: false,
            dequeue_wait_ms: 0,
            prefetch: 1,
            token: token.map(str::to_string),
            connector: Default::default(),
        })
    }

    fn encoded(req: &Req) -> String {
        let mut out = Vec::new();
        codec().encode(req, 1, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn reply(status: &str, body: &str) -> Vec<u8> {
        format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            .into_bytes()
    }

    #[test]
    fn a_token_goes_in_every_request_as_a_bearer_header() {
        let mut codec = codec_with(Some("tqx_secret"));
        assert!(codec.handshake(Role::Both).is_empty(), "HTTP has no handshake; the header authenticates");
        // Templated requests (enqueue, batch, dequeue) and built ones alike.
        for req in [Req::Enqueue, Req::EnqueueBatch, Req::Dequeue, Req::Ping, Req::Status { id: 1 }] {
            let mut out = Vec::new();
            codec.encode(&req, 1, &mut out);
            let text = String::from_utf8(out).unwrap();
            let head = &text[..text.find("\r\n\r\n").unwrap()];
            assert!(head.contains("\r\nHost: 127.0.0.1:7700\r\nAuthorization: Bearer tqx_secret"), "{req:?}: {text}");
        }
        assert!(!encoded(&Req::Enqueue).contains("Authorization"), "none without a token");
    }

    #[test]
    fn requests_are_what_wrk_would_send() {
        let body = r#"{"payload":{"p":"xx"}}"#;
        assert_eq!(
            encoded(&Req::Enqueue),
            format!(
                "POST /v1/queues/bench/tasks HTTP/1.1\r\nHost: 127.0.0.1:7700\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        );
        assert!(encoded(&Req::EnqueueBatch).ends_with(r#"{"tasks":[{"payload":{"p":"xx"}},{"payload":{"p":"xx"}}]}"#));
        assert!(encoded(&Req::Dequeue).ends_with(r#"{"queues":["bench"],"max":1}"#));
        assert_eq!(encoded(&Req::Status { id: 42 }), "GET /v1/tasks/42 HTTP/1.1\r\nHost: 127.0.0.1:7700\r\n\r\n");
        let complete = encoded(&Req::Complete { handle: Handle::Lease { id: 7, lease: 9 }, join_slot: None });
        assert!(complete.starts_with("POST /v1/tasks/7/complete HTTP/1.1\r\n"));
        assert!(complete.ends_with(r#"{"lease":"9"}"#));
        let join = encoded(&Req::DepJoin { slot: 4, children: vec![5, 6] });
        assert!(join.ends_with(r#"{"payload":{"j":4,"p":""},"depends_on":["5","6"]}"#), "{join}");
        let children = encoded(&Req::DepChildren { parent: 3, slot: 4 });
        assert_eq!(children.matches(r#""depends_on":["3"]"#).count(), DEPS_CHILDREN);
    }

    #[test]
    fn replies_split_across_reads_parse_in_order() {
        let mut codec = codec();
        let task = r#"{"tasks":[{"id":"7","queue":"bench","payload":{"j":12,"p":""},"priority":0,"group":null,"attempt":1,"lease":"123456789","lease_expires_at_ms":1}]}"#;
        let exchanges: Vec<(Req, Vec<u8>, Reply)> = vec![
            (Req::Enqueue, reply("201 Created", r#"{"id":"41","state":"ready"}"#), Reply::Enqueued { id: Some(41) }),
            (
                Req::Dequeue,
                reply("200 OK", task),
                Reply::Leased { handle: Handle::Lease { id: 7, lease: 123_456_789 }, join_slot: Some(12) },
            ),
            (Req::Dequeue, reply("200 OK", r#"{"tasks":[]}"#), Reply::Empty),
            (
                Req::PreloadBatch { count: 2 },
                reply("201 Created", r#"{"ids":["8","9"],"states":["ready","ready"]}"#),
                Reply::EnqueuedBatch { ids: vec![8, 9] },
            ),
            (Req::Status { id: 8 }, reply("200 OK", r#"{"id":"8"}"#), Reply::Done),
            (Req::Ping, reply("503 Service Unavailable", r#"{"status":"recovering"}"#), Reply::NotReady),
        ];
        let stream: Vec<u8> = exchanges.iter().flat_map(|(_, bytes, _)| bytes.clone()).collect();
        let mut input = BytesMut::new();
        let mut next = 0;
        for &b in &stream {
            input.extend_from_slice(&[b]);
            while let Some((id, got)) = codec.decode(&mut input, exchanges.get(next).map(|e| &e.0)).unwrap() {
                assert_eq!(id, None);
                assert_eq!(got, exchanges[next].2, "exchange {next}");
                next += 1;
            }
        }
        assert_eq!(next, exchanges.len());
        assert!(input.is_empty());
    }

    #[test]
    fn error_statuses_are_errors_and_garbage_is_a_protocol_error() {
        let mut codec = codec();
        let mut input = BytesMut::from(&reply("503 Service Unavailable", r#"{"error":{"code":"overloaded"}}"#)[..]);
        let (_, got) = codec.decode(&mut input, Some(&Req::Enqueue)).unwrap().unwrap();
        assert!(matches!(got, Reply::Error(m) if m.contains("503") && m.contains("overloaded")));
        let mut garbage = BytesMut::from(&b"TQ\x01\x20garbage\r\n\r\n"[..]);
        assert!(codec.decode(&mut garbage, Some(&Req::Enqueue)).is_err());
    }
}
