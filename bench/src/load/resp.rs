//! `redis` and `redis-reliable`: RESP2 (the Redis serialization protocol).
//!
//! - `redis`: enqueue is `LPUSH queue payload`, dequeue is `RPOP queue` (the task
//!   is gone once popped: nothing to complete).
//! - `redis-reliable`: dequeue is `LMOVE queue queue:processing RIGHT LEFT` and
//!   completing is `LREM queue:processing 1 value`, the pattern Redis documents
//!   for a queue that survives a consumer crash.
//! - Batch enqueue is one `LPUSH` with `--batch` values.
//! - Status lookups: Redis has no task ids. A Redis-based queue that answers
//!   "what is the state of task N" keeps a hash per task (as RQ and Sidekiq do),
//!   so the status scenario preloads `HSET queue:task:N state ready payload P`
//!   and looks tasks up with `HGETALL queue:task:N`.

use bytes::{Buf, Bytes, BytesMut};

use super::codec::{parse_u64, Codec, CodecParams, Handle, ProtocolError, Reply, Req, Role};

/// Bound on one reply (bulk strings and nesting), against a misbehaving peer.
const REPLY_BYTES_MAX: usize = 16 << 20;
/// Arrays nest at most this deep in the replies we parse.
const NESTING_MAX: usize = 8;

/// One RESP value's kind, without its contents (bulk strings as byte ranges
/// of the input, arrays as their length: their elements are checked and skipped).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    Simple,
    Error(String),
    Integer(i64),
    /// `None`: the nil bulk string (`$-1`).
    Bulk(Option<std::ops::Range<usize>>),
    /// `None`: the nil array (`*-1`).
    Array(Option<usize>),
}

/// The line starting at `pos` (without its CRLF) and the position after the CRLF.
fn line(input: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = &input[pos..];
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], pos + end + 2))
}

fn integer(text: &[u8]) -> Result<i64, ProtocolError> {
    let (negative, digits) = match text.strip_prefix(b"-") {
        Some(d) => (true, d),
        None => (false, text),
    };
    match parse_u64(digits) {
        Some((v, n)) if n == digits.len() && v <= i64::MAX as u64 => Ok(if negative { -(v as i64) } else { v as i64 }),
        _ => Err(ProtocolError(format!("bad RESP integer {:?}", String::from_utf8_lossy(text)))),
    }
}

/// Scans one value starting at `pos`: `Ok(None)` until all of it is there.
fn scan(input: &[u8], pos: usize, depth: usize) -> Result<Option<(Value, usize)>, ProtocolError> {
    if pos >= input.len() {
        return Ok(None);
    }
    let Some((text, next)) = line(input, pos + 1) else {
        if input.len() - pos > REPLY_BYTES_MAX {
            return Err(ProtocolError("RESP line too long".into()));
        }
        return Ok(None);
    };
    let value = match input[pos] {
        b'+' => (Value::Simple, next),
        b'-' => (Value::Error(String::from_utf8_lossy(text).into_owned()), next),
        b':' => (Value::Integer(integer(text)?), next),
        b'$' => {
            let len = integer(text)?;
            if len < 0 {
                (Value::Bulk(None), next)
            } else {
                let len = len as usize;
                if len > REPLY_BYTES_MAX {
                    return Err(ProtocolError(format!("RESP bulk string of {len} bytes")));
                }
                if input.len() < next + len + 2 {
                    return Ok(None);
                }
                if &input[next + len..next + len + 2] != b"\r\n" {
                    return Err(ProtocolError("RESP bulk string without its CRLF".into()));
                }
                (Value::Bulk(Some(next..next + len)), next + len + 2)
            }
        }
        b'*' => {
            let count = integer(text)?;
            if count < 0 {
                (Value::Array(None), next)
            } else {
                if depth >= NESTING_MAX || count as usize > REPLY_BYTES_MAX {
                    return Err(ProtocolError("RESP array too deep or too long".into()));
                }
                let mut at = next;
                for _ in 0..count {
                    match scan(input, at, depth + 1)? {
                        Some((_, end)) => at = end,
                        None => return Ok(None),
                    }
                }
                (Value::Array(Some(count as usize)), at)
            }
        }
        other => return Err(ProtocolError(format!("bad RESP type byte {other:#04x}"))),
    };
    Ok(Some(value))
}

/// Appends a command as an array of bulk strings.
fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        out.extend_from_slice(arg.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

pub(crate) struct RespCodec {
    reliable: bool,
    queue: String,
    processing: String,
    payload: Bytes,
    lpush: Vec<u8>,
    lpush_batch: Vec<u8>,
    dequeue: Vec<u8>,
}

impl RespCodec {
    fn task_key(&self, id: u64) -> String {
        format!("{}:task:{id}", self.queue)
    }
}

impl Codec for RespCodec {
    fn new(params: &CodecParams) -> RespCodec {
        let queue = params.queue.clone();
        let processing = format!("{queue}:processing");
        let mut lpush = Vec::new();
        command(&mut lpush, &[b"LPUSH", queue.as_bytes(), &params.payload]);
        let mut lpush_batch = Vec::new();
        let mut args: Vec<&[u8]> = vec![b"LPUSH", queue.as_bytes()];
        args.extend(std::iter::repeat_n(&params.payload[..], params.batch));
        command(&mut lpush_batch, &args);
        let mut dequeue = Vec::new();
        if params.reliable {
            command(&mut dequeue, &[b"LMOVE", queue.as_bytes(), processing.as_bytes(), b"RIGHT", b"LEFT"]);
        } else {
            command(&mut dequeue, &[b"RPOP", queue.as_bytes()]);
        }
        RespCodec {
            reliable: params.reliable,
            queue,
            processing,
            payload: params.payload.clone(),
            lpush,
            lpush_batch,
            dequeue,
        }
    }

    fn handshake(&self, _role: Role) -> Vec<Req> {
        Vec::new()
    }

    fn in_order(&self) -> bool {
        true
    }

    fn encode(&mut self, req: &Req, _request_id: u64, out: &mut Vec<u8>) {
        match req {
            Req::Ping => command(out, &[b"PING"]),
            Req::Enqueue => out.extend_from_slice(&self.lpush),
            Req::EnqueueBatch => out.extend_from_slice(&self.lpush_batch),
            Req::PreloadBatch { count } => {
                let mut args: Vec<&[u8]> = vec![b"LPUSH", self.queue.as_bytes()];
                args.extend(std::iter::repeat_n(&self.payload[..], *count));
                command(out, &args);
            }
            Req::PreloadStatus { id } => {
                let key = self.task_key(*id);
                command(out, &[b"HSET", key.as_bytes(), b"state", b"ready", b"payload", &self.payload]);
            }
            Req::Dequeue => out.extend_from_slice(&self.dequeue),
            Req::Complete { handle: Handle::Value(value), .. } => {
                command(out, &[b"LREM", self.processing.as_bytes(), b"1", value]);
            }
            Req::Status { id } => command(out, &[b"HGETALL", self.task_key(*id).as_bytes()]),
            _ => unreachable!("not a Redis request: {req:?}"),
        }
    }

    fn decode(
        &mut self,
        input: &mut BytesMut,
        front: Option<&Req>,
    ) -> Result<Option<(Option<u64>, Reply)>, ProtocolError> {
        let Some((value, end)) = scan(input, 0, 0)? else {
            return Ok(None);
        };
        let Some(front) = front else {
            return Err(ProtocolError("a reply to no request".into()));
        };
        let reply = match (front, value) {
            (Req::Ping, Value::Error(m)) if m.starts_with("LOADING") => Reply::NotReady,
            (_, Value::Error(m)) => Reply::Error(m),
            (Req::Ping, Value::Simple) => Reply::Done,
            (Req::Enqueue, Value::Integer(_)) => Reply::Enqueued { id: None },
            (Req::EnqueueBatch | Req::PreloadBatch { .. }, Value::Integer(_)) => {
                Reply::EnqueuedBatch { ids: Vec::new() }
            }
            (Req::PreloadStatus { .. }, Value::Integer(_)) => Reply::Done,
            (Req::Dequeue, Value::Bulk(None)) => Reply::Empty,
            (Req::Dequeue, Value::Bulk(Some(range))) => {
                let handle =
                    if self.reliable { Handle::Value(Bytes::copy_from_slice(&input[range])) } else { Handle::None };
                Reply::Leased { handle, join_slot: None }
            }
            (Req::Complete { .. }, Value::Integer(1)) => Reply::Done,
            (Req::Complete { .. }, Value::Integer(n)) => Reply::Error(format!("LREM removed {n} values, not 1")),
            (Req::Status { .. }, Value::Array(Some(0))) => Reply::Error("no such task hash".into()),
            (Req::Status { .. }, Value::Array(Some(_))) => Reply::Done,
            (req, value) => Reply::Error(format!("unexpected reply {value:?} to {req:?}")),
        };
        input.advance(end);
        Ok(Some((None, reply)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(reliable: bool) -> RespCodec {
        RespCodec::new(&CodecParams {
            addr: String::new(),
            queue: "bench".into(),
            payload: Bytes::from_static(b"abc"),
            payload_bytes: 3,
            batch: 2,
            reliable,
            dequeue_wait_ms: 0,
            prefetch: 1,
            token: None,
            connector: Default::default(),
        })
    }

    fn encoded(codec: &mut RespCodec, req: &Req) -> Vec<u8> {
        let mut out = Vec::new();
        codec.encode(req, 1, &mut out);
        out
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut plain = codec(false);
        assert_eq!(encoded(&mut plain, &Req::Enqueue), b"*3\r\n$5\r\nLPUSH\r\n$5\r\nbench\r\n$3\r\nabc\r\n");
        assert_eq!(
            encoded(&mut plain, &Req::EnqueueBatch),
            b"*4\r\n$5\r\nLPUSH\r\n$5\r\nbench\r\n$3\r\nabc\r\n$3\r\nabc\r\n"
        );
        assert_eq!(encoded(&mut plain, &Req::Dequeue), b"*2\r\n$4\r\nRPOP\r\n$5\r\nbench\r\n");
        assert_eq!(encoded(&mut plain, &Req::Status { id: 9 }), b"*2\r\n$7\r\nHGETALL\r\n$12\r\nbench:task:9\r\n");
        let mut reliable = codec(true);
        assert_eq!(
            encoded(&mut reliable, &Req::Dequeue),
            b"*5\r\n$5\r\nLMOVE\r\n$5\r\nbench\r\n$16\r\nbench:processing\r\n$5\r\nRIGHT\r\n$4\r\nLEFT\r\n"
        );
        let complete = Req::Complete { handle: Handle::Value(Bytes::from_static(b"abc")), join_slot: None };
        assert_eq!(
            encoded(&mut reliable, &complete),
            b"*4\r\n$4\r\nLREM\r\n$16\r\nbench:processing\r\n$1\r\n1\r\n$3\r\nabc\r\n"
        );
    }

    #[test]
    fn scan_reads_every_type_and_waits_for_whole_values() {
        let cases: &[(&[u8], Value)] = &[
            (b"+OK\r\n", Value::Simple),
            (b"-ERR wrong\r\n", Value::Error("ERR wrong".into())),
            (b":-12\r\n", Value::Integer(-12)),
            (b"$3\r\nabc\r\n", Value::Bulk(Some(4..7))),
            (b"$0\r\n\r\n", Value::Bulk(Some(4..4))),
            (b"$-1\r\n", Value::Bulk(None)),
            (b"*-1\r\n", Value::Array(None)),
            (b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n", Value::Array(Some(2))),
        ];
        for (bytes, expected) in cases {
            for cut in 0..bytes.len() {
                assert_eq!(
                    scan(&bytes[..cut], 0, 0).unwrap(),
                    None,
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(bytes)
                );
            }
            assert_eq!(scan(bytes, 0, 0).unwrap(), Some((expected.clone(), bytes.len())));
        }
        assert!(scan(b"?x\r\n", 0, 0).is_err());
        assert!(scan(b"$3\r\nabcd\r\n", 0, 0).is_err());
        assert!(scan(b":1x\r\n", 0, 0).is_err());
    }

    #[test]
    fn replies_map_by_the_request_they_answer() {
        let mut reliable = codec(true);
        let exchanges: Vec<(Req, &[u8], Reply)> = vec![
            (Req::Enqueue, b":5\r\n", Reply::Enqueued { id: None }),
            (
                Req::Dequeue,
                b"$3\r\nabc\r\n",
                Reply::Leased { handle: Handle::Value(Bytes::from_static(b"abc")), join_slot: None },
            ),
            (Req::Dequeue, b"$-1\r\n", Reply::Empty),
            (Req::Complete { handle: Handle::Value(Bytes::new()), join_slot: None }, b":1\r\n", Reply::Done),
            (Req::Status { id: 1 }, b"*4\r\n$5\r\nstate\r\n$5\r\nready\r\n$7\r\npayload\r\n$3\r\nabc\r\n", Reply::Done),
            (Req::Status { id: 2 }, b"*0\r\n", Reply::Error("no such task hash".into())),
            (Req::Enqueue, b"-OOM command not allowed\r\n", Reply::Error("OOM command not allowed".into())),
            (Req::Ping, b"-LOADING Redis is loading\r\n", Reply::NotReady),
        ];
        let stream: Vec<u8> = exchanges.iter().flat_map(|(_, bytes, _)| bytes.to_vec()).collect();
        let mut input = BytesMut::new();
        let mut next = 0;
        for &b in &stream {
            input.extend_from_slice(&[b]);
            while let Some((_, got)) = reliable.decode(&mut input, exchanges.get(next).map(|e| &e.0)).unwrap() {
                assert_eq!(got, exchanges[next].2, "exchange {next}");
                next += 1;
            }
        }
        assert_eq!(next, exchanges.len());
        let mut plain = codec(false);
        let mut input = BytesMut::from(&b"$3\r\nabc\r\n"[..]);
        assert_eq!(
            plain.decode(&mut input, Some(&Req::Dequeue)).unwrap(),
            Some((None, Reply::Leased { handle: Handle::None, join_slot: None }))
        );
    }
}
