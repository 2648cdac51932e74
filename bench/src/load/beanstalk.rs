//! `beanstalkd`: its text protocol (protocol.txt in beanstalkd's sources).
//!
//! Producers `use` the tube and `put`; consumers `watch` it, `ignore default`,
//! then `reserve-with-timeout 0` (answered `TIMED_OUT` at once when the tube is
//! empty) and `delete` the job they got. Status lookups are `stats-job ID`.
//! There is no batch put: the batch scenario is unsupported.

use bytes::{Buf, BytesMut};

use super::codec::{find, parse_u64, Codec, CodecParams, Handle, ProtocolError, Reply, Req, Role};

/// Job priority (beanstalkd's clients default to 1024; the value plays no part
/// here since every job has the same).
const PRIORITY: u32 = 1024;
/// Seconds a reserved job may run before beanstalkd gives it back: the lease.
const TTR_SECONDS: u32 = 60;
/// A reply line longer than this is not beanstalkd.
const LINE_BYTES_MAX: usize = 1024;
/// The largest job body accepted in a reply (beanstalkd's own default maximum
/// job size is 65,535 bytes).
const BODY_BYTES_MAX: usize = 16 << 20;

pub(crate) struct BeanstalkCodec {
    tube: String,
    put: Vec<u8>,
}

impl Codec for BeanstalkCodec {
    fn new(params: &CodecParams) -> BeanstalkCodec {
        let mut put = format!("put {PRIORITY} 0 {TTR_SECONDS} {}\r\n", params.payload.len()).into_bytes();
        put.extend_from_slice(&params.payload);
        put.extend_from_slice(b"\r\n");
        BeanstalkCodec { tube: params.queue.clone(), put }
    }

    fn handshake(&self, role: Role) -> Vec<Req> {
        match role {
            Role::Producer => vec![Req::UseTube],
            Role::Consumer => vec![Req::WatchTube, Req::IgnoreDefault],
            Role::Both => vec![Req::UseTube, Req::WatchTube, Req::IgnoreDefault],
        }
    }

    fn in_order(&self) -> bool {
        true
    }

    fn encode(&mut self, req: &Req, _request_id: u64, out: &mut Vec<u8>) {
        let text = match req {
            Req::Enqueue => {
                out.extend_from_slice(&self.put);
                return;
            }
            Req::UseTube => format!("use {}\r\n", self.tube),
            Req::WatchTube => format!("watch {}\r\n", self.tube),
            Req::IgnoreDefault => "ignore default\r\n".to_string(),
            Req::Dequeue => "reserve-with-timeout 0\r\n".to_string(),
            Req::Complete { handle: Handle::Id(id), .. } => format!("delete {id}\r\n"),
            Req::Status { id } => format!("stats-job {id}\r\n"),
            _ => unreachable!("not a beanstalkd request: {req:?}"),
        };
        out.extend_from_slice(text.as_bytes());
    }

    fn decode(
        &mut self,
        input: &mut BytesMut,
        front: Option<&Req>,
    ) -> Result<Option<(Option<u64>, Reply)>, ProtocolError> {
        let Some(line_end) = find(input, b"\r\n") else {
            if input.len() > LINE_BYTES_MAX {
                return Err(ProtocolError("beanstalkd reply line too long".into()));
            }
            return Ok(None);
        };
        let line = &input[..line_end];
        let mut words = line.split(|&b| b == b' ');
        let word = words.next().unwrap_or_default();
        let mut number = || -> Result<u64, ProtocolError> {
            let w = words.next().unwrap_or_default();
            match parse_u64(w) {
                Some((v, n)) if n == w.len() => Ok(v),
                _ => Err(ProtocolError(format!("bad beanstalkd reply {:?}", String::from_utf8_lossy(line)))),
            }
        };
        let mut consumed = line_end + 2;
        let reply = match word {
            b"INSERTED" => Reply::Enqueued { id: Some(number()?) },
            b"RESERVED" | b"OK" => {
                let id = if word == b"RESERVED" { Some(number()?) } else { None };
                let body_bytes = number()? as usize;
                if body_bytes > BODY_BYTES_MAX {
                    return Err(ProtocolError(format!("beanstalkd body of {body_bytes} bytes")));
                }
                if input.len() < consumed + body_bytes + 2 {
                    return Ok(None);
                }
                if &input[consumed + body_bytes..consumed + body_bytes + 2] != b"\r\n" {
                    return Err(ProtocolError("beanstalkd body without its CRLF".into()));
                }
                consumed += body_bytes + 2;
                match id {
                    Some(id) => Reply::Leased { handle: Handle::Id(id), join_slot: None },
                    None => Reply::Done,
                }
            }
            b"TIMED_OUT" | b"DEADLINE_SOON" => Reply::Empty,
            b"DELETED" | b"USING" | b"WATCHING" => Reply::Done,
            _ => Reply::Error(String::from_utf8_lossy(line).into_owned()),
        };
        if front.is_none() {
            return Err(ProtocolError("a reply to no request".into()));
        }
        input.advance(consumed);
        Ok(Some((None, reply)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn codec() -> BeanstalkCodec {
        BeanstalkCodec::new(&CodecParams {
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

    #[test]
    fn commands_are_lines() {
        let mut codec = codec();
        let mut out = Vec::new();
        for req in codec.handshake(Role::Both) {
            codec.encode(&req, 1, &mut out);
        }
        codec.encode(&Req::Enqueue, 1, &mut out);
        codec.encode(&Req::Dequeue, 1, &mut out);
        codec.encode(&Req::Complete { handle: Handle::Id(12), join_slot: None }, 1, &mut out);
        codec.encode(&Req::Status { id: 13 }, 1, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "use bench\r\nwatch bench\r\nignore default\r\nput 1024 0 60 5\r\nhello\r\n\
             reserve-with-timeout 0\r\ndelete 12\r\nstats-job 13\r\n"
        );
    }

    #[test]
    fn replies_split_across_reads_parse() {
        let mut codec = codec();
        let exchanges: Vec<(Req, &[u8], Reply)> = vec![
            (Req::UseTube, b"USING bench\r\n", Reply::Done),
            (Req::WatchTube, b"WATCHING 2\r\n", Reply::Done),
            (Req::Enqueue, b"INSERTED 17\r\n", Reply::Enqueued { id: Some(17) }),
            (Req::Dequeue, b"RESERVED 17 5\r\nhel\r\n\r\n", Reply::Leased { handle: Handle::Id(17), join_slot: None }),
            (Req::Dequeue, b"TIMED_OUT\r\n", Reply::Empty),
            (Req::Complete { handle: Handle::Id(17), join_slot: None }, b"DELETED\r\n", Reply::Done),
            (Req::Status { id: 17 }, b"OK 11\r\n---\nid: 17\n\r\n", Reply::Done),
            (Req::Status { id: 18 }, b"NOT_FOUND\r\n", Reply::Error("NOT_FOUND".into())),
            (Req::Enqueue, b"BURIED 19\r\n", Reply::Error("BURIED 19".into())),
        ];
        let stream: Vec<u8> = exchanges.iter().flat_map(|(_, bytes, _)| bytes.to_vec()).collect();
        let mut input = BytesMut::new();
        let mut next = 0;
        for &b in &stream {
            input.extend_from_slice(&[b]);
            while let Some((_, got)) = codec.decode(&mut input, exchanges.get(next).map(|e| &e.0)).unwrap() {
                assert_eq!(got, exchanges[next].2, "exchange {next}");
                next += 1;
            }
        }
        assert_eq!(next, exchanges.len());
        assert!(input.is_empty());
    }

    #[test]
    fn malformed_replies_are_protocol_errors() {
        let mut codec = codec();
        for bad in [&b"INSERTED x\r\n"[..], b"RESERVED 1 3\r\nabcde\r\n"] {
            let mut input = BytesMut::from(bad);
            assert!(codec.decode(&mut input, Some(&Req::Enqueue)).is_err(), "{bad:?}");
        }
    }
}
