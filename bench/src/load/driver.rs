//! One connection's loop, the same for every protocol and scenario.
//!
//! Closed loop: keep `depth` requests in flight; whenever replies free slots,
//! ask the workload for that many requests and send them in one write.
//! Open loop: send each request at its scheduled time whatever the replies,
//! every request that is due in one write, and time it from its scheduled time.
//! Replies are read into one reusable buffer and taken off its front as whole
//! replies arrive; each is matched to its request (the oldest one for in-order
//! protocols, by request id for the binary one) and handed to the workload.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use super::codec::{Codec, ProtocolError, Reply, Req};
use super::stats::ConnStats;
use super::stream::Stream;
use super::timer::{PreciseTimer, Wake};

/// Bytes the receive buffer grows by before a read; replies here are far
/// smaller, so one read takes many of them.
const READ_CHUNK_BYTES: usize = 64 << 10;
/// Requests in flight on one connection in the open loop. Past it, sends wait
/// for replies (their latency still counts from their scheduled time).
pub(crate) const OPEN_IN_FLIGHT_MAX: usize = 4_096;

/// Why a connection stopped early.
#[derive(Debug)]
pub(crate) enum ConnError {
    Io(std::io::Error),
    /// The server closed the connection.
    Closed,
    Protocol(ProtocolError),
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "connection failed: {e}"),
            ConnError::Closed => f.write_str("the server closed the connection"),
            ConnError::Protocol(e) => write!(f, "protocol error: {e}"),
        }
    }
}

impl From<std::io::Error> for ConnError {
    fn from(e: std::io::Error) -> ConnError {
        ConnError::Io(e)
    }
}

impl From<ProtocolError> for ConnError {
    fn from(e: ProtocolError) -> ConnError {
        ConnError::Protocol(e)
    }
}

/// A request waiting for its reply.
#[derive(Debug)]
pub(crate) struct Pending {
    pub req: Req,
    /// When the op this request belongs to started (for a complete: its
    /// dequeue's send time); in the open loop, the scheduled send time.
    pub op_start: Instant,
}

/// Requests in flight, by request id. Ids are given out in order from 1, so
/// the ones in flight lie between the oldest unanswered one and the next: a
/// ring indexed by `id - oldest` finds any of them in O(1), whatever order the
/// replies come in.
#[derive(Debug)]
struct InFlight {
    oldest_id: u64,
    slots: VecDeque<Option<Pending>>,
    count: usize,
}

impl InFlight {
    fn new() -> InFlight {
        InFlight { oldest_id: 1, slots: VecDeque::new(), count: 0 }
    }

    /// The id the next pushed request gets.
    fn next_id(&self) -> u64 {
        self.oldest_id + self.slots.len() as u64
    }

    fn push(&mut self, pending: Pending) -> u64 {
        let id = self.next_id();
        self.slots.push_back(Some(pending));
        self.count += 1;
        id
    }

    fn front(&self) -> Option<&Req> {
        self.slots.front().and_then(|s| s.as_ref()).map(|p| &p.req)
    }

    /// Takes request `id`, or the oldest one when `id` is `None`; returns it
    /// with its id.
    fn take(&mut self, id: Option<u64>) -> Result<(u64, Pending), ProtocolError> {
        let index = match id {
            None => 0,
            Some(id) => match id.checked_sub(self.oldest_id) {
                Some(i) if i < self.slots.len() as u64 => i as usize,
                _ => return Err(ProtocolError(format!("a reply to request {id}, which is not in flight"))),
            },
        };
        let pending = self
            .slots
            .get_mut(index)
            .and_then(Option::take)
            .ok_or_else(|| ProtocolError(format!("a reply to request {id:?}, which is not in flight")))?;
        let id = self.oldest_id + index as u64;
        self.count -= 1;
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.oldest_id += 1;
        }
        Ok((id, pending))
    }

    fn len(&self) -> usize {
        self.count
    }

    fn clear(&mut self) {
        self.oldest_id += self.slots.len() as u64;
        self.slots.clear();
        self.count = 0;
    }
}

/// What a scenario does on one connection: which request to send next, and
/// what a reply means.
pub(crate) trait Workload {
    /// The next request to send, and when its op started (`now`, unless it
    /// continues an earlier op). `None`: nothing to send until a reply (or a
    /// wake-up) comes.
    fn next(&mut self, now: Instant) -> Option<(Req, Instant)>;

    /// Open loop only: a request that continues an op already started (a
    /// complete after its dequeue), sent at once rather than on the schedule,
    /// with its op's start. Closed loops get these from [`Workload::next`].
    fn follow_up(&mut self) -> Option<(Req, Instant)> {
        None
    }

    /// A reply arrived at `now` for `pending`.
    fn on_reply(&mut self, pending: Pending, reply: Reply, now: Instant, stats: &mut ConnStats);

    /// True when the workload has sent everything it will (preloading).
    fn finished(&self) -> bool {
        false
    }
}

/// How requests are paced.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Mode {
    /// Keep this many requests in flight.
    Closed { depth: usize },
    /// Send one request every `interval`, the first at `first`.
    Open { first: Instant, interval: Duration },
    /// The same schedule, but the connection is woken for each send by the
    /// caller's `wake` (a clock shared by many connections, see
    /// `hold::SharedClock`) instead of a timerfd of its own: 10,000 slow
    /// connections then need 10,000 descriptors, not 20,000.
    Paced { first: Instant, interval: Duration },
}

/// A codec with its buffers and requests in flight: one connection's state,
/// kept across connections by the storm scenario.
pub(crate) struct Session<C> {
    pub codec: C,
    read: BytesMut,
    write: Vec<u8>,
    in_flight: InFlight,
}

impl<C: Codec> Session<C> {
    pub(crate) fn new(codec: C) -> Session<C> {
        Session {
            codec,
            read: BytesMut::with_capacity(READ_CHUNK_BYTES),
            write: Vec::new(),
            in_flight: InFlight::new(),
        }
    }

    /// Forgets what belonged to the previous connection.
    pub(crate) fn reset(&mut self) {
        self.read.clear();
        self.write.clear();
        self.in_flight.clear();
    }

    fn send(&mut self, req: Req, op_start: Instant) {
        let id = self.in_flight.next_id();
        self.codec.encode(&req, id, &mut self.write);
        self.in_flight.push(Pending { req, op_start });
    }

    /// Reads once (at least one byte) into the receive buffer.
    async fn read_some(&mut self, stream: &mut Stream) -> Result<(), ConnError> {
        self.read.reserve(READ_CHUNK_BYTES);
        if stream.read_buf(&mut self.read).await? == 0 {
            return Err(ConnError::Closed);
        }
        Ok(())
    }

    /// Takes the next whole reply off the receive buffer, with its request and
    /// the request's id.
    fn next_reply(&mut self) -> Result<Option<(u64, Pending, Reply)>, ConnError> {
        let in_order = self.codec.in_order();
        let front = if in_order { self.in_flight.front() } else { None };
        let Some((id, reply)) = self.codec.decode(&mut self.read, front)? else {
            return Ok(None);
        };
        let (id, pending) = self.in_flight.take(if in_order { None } else { id })?;
        Ok(Some((id, pending, reply)))
    }

    /// Sends `reqs` in one write and waits for all their replies; returns them
    /// in request order (handshakes, setup, preloading, the storm's requests).
    pub(crate) async fn call(&mut self, stream: &mut Stream, reqs: Vec<Req>) -> Result<Vec<Reply>, ConnError> {
        let now = Instant::now();
        let first_id = self.in_flight.next_id();
        let count = reqs.len();
        for req in reqs {
            self.send(req, now);
        }
        stream.write_all(&self.write).await?;
        self.write.clear();
        let mut replies: Vec<Option<Reply>> = vec![None; count];
        let mut received = 0;
        while received < count {
            match self.next_reply()? {
                Some((id, _, reply)) => {
                    let index = id.checked_sub(first_id).map(|i| i as usize).filter(|&i| i < count);
                    let Some(index) = index else {
                        return Err(ProtocolError(format!("a reply to request {id}, not sent by this call")).into());
                    };
                    replies[index] = Some(reply);
                    received += 1;
                }
                None => self.read_some(stream).await?,
            }
        }
        Ok(replies.into_iter().map(|r| r.expect("every reply received")).collect())
    }

    /// Runs `workload` on `stream` until `window.end` (or until it has
    /// finished and every reply is in).
    pub(crate) async fn run<W: Workload>(
        &mut self,
        stream: &mut Stream,
        workload: &mut W,
        mode: Mode,
        stats: &mut ConnStats,
        wake: &Notify,
    ) -> Result<(), ConnError> {
        let end = stats.window.end;
        // Only the open loop needs microsecond wake-ups (its latencies count
        // from the schedule); the others wait for the end of the window on
        // tokio's timer (1 ms resolution is plenty there) and spare a
        // descriptor per connection.
        let mut timer = match mode {
            Mode::Open { .. } => Some(PreciseTimer::new()?),
            Mode::Closed { .. } | Mode::Paced { .. } => None,
        };
        let end_sleep = tokio::time::sleep_until(end.into());
        tokio::pin!(end_sleep);
        let mut next_scheduled = match mode {
            Mode::Open { first, .. } | Mode::Paced { first, .. } => first,
            Mode::Closed { .. } => end,
        };
        loop {
            let now = Instant::now();
            if now >= end || (workload.finished() && self.in_flight.len() == 0) {
                return Ok(());
            }
            match mode {
                Mode::Closed { depth } => {
                    while self.in_flight.len() < depth {
                        let Some((req, op_start)) = workload.next(now) else { break };
                        self.send(req, op_start);
                    }
                }
                Mode::Open { interval, .. } | Mode::Paced { interval, .. } => {
                    // Ops already started first: a scheduled `next` could
                    // otherwise hand out their follow-ups on a tick.
                    while self.in_flight.len() < OPEN_IN_FLIGHT_MAX {
                        let Some((req, op_start)) = workload.follow_up() else { break };
                        self.send(req, op_start);
                    }
                    while next_scheduled <= now && next_scheduled < end && self.in_flight.len() < OPEN_IN_FLIGHT_MAX {
                        let Some((req, _)) = workload.next(next_scheduled) else { break };
                        self.send(req, next_scheduled);
                        next_scheduled += interval;
                    }
                }
            }
            if !self.write.is_empty() {
                stream.write_all(&self.write).await?;
                self.write.clear();
            }
            // Replies the codec gives itself (a request its protocol never
            // answers, such as AMQP's `basic.ack`) are there without a read.
            let mut answered = false;
            while let Some((_, pending, reply)) = self.next_reply()? {
                workload.on_reply(pending, reply, Instant::now(), stats);
                answered = true;
            }
            if answered {
                continue;
            }
            let wake_at = match (mode, timer.as_mut()) {
                // Sends are due on the schedule, unless every slot is taken
                // (then only a reply frees one).
                (Mode::Open { interval, .. }, Some(timer))
                    if next_scheduled < end && self.in_flight.len() < OPEN_IN_FLIGHT_MAX =>
                {
                    if !timer.is_periodic() {
                        timer.set_periodic(next_scheduled, interval)?;
                    }
                    Wake::Scheduled(next_scheduled)
                }
                _ => Wake::At(end),
            };
            let own_timer = timer.is_some();
            self.read.reserve(READ_CHUNK_BYTES);
            tokio::select! {
                biased;
                read = stream.read_buf(&mut self.read) => {
                    if read? == 0 {
                        return Err(ConnError::Closed);
                    }
                    while let Some((_, pending, reply)) = self.next_reply()? {
                        let now = Instant::now();
                        workload.on_reply(pending, reply, now, stats);
                    }
                }
                slept = wait_on(&mut timer, wake_at), if own_timer => slept?,
                () = &mut end_sleep, if !own_timer => {}
                () = wake.notified() => {}
            }
        }
    }
}

/// Waits on the connection's own timer (the open loop); never returns
/// without one (the select above then does not poll it).
async fn wait_on(timer: &mut Option<PreciseTimer>, wake: Wake) -> std::io::Result<()> {
    match timer {
        Some(timer) => timer.wait(wake).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_matches_replies_in_any_order() {
        let now = Instant::now();
        let mut ring = InFlight::new();
        let ids: Vec<u64> = (0..4).map(|i| ring.push(Pending { req: Req::Status { id: i }, op_start: now })).collect();
        assert_eq!(ids, [1, 2, 3, 4]);
        assert_eq!(ring.take(Some(3)).unwrap().1.req, Req::Status { id: 2 });
        assert_eq!(ring.take(Some(1)).unwrap().1.req, Req::Status { id: 0 });
        assert!(ring.take(Some(3)).is_err(), "taken twice");
        assert!(ring.take(Some(9)).is_err(), "never sent");
        assert_eq!(ring.front(), Some(&Req::Status { id: 1 }));
        let (id, pending) = ring.take(None).unwrap();
        assert_eq!((id, pending.req), (2, Req::Status { id: 1 }));
        assert_eq!(ring.len(), 1);
        assert_eq!(ring.push(Pending { req: Req::Ping, op_start: now }), 5);
        assert_eq!(ring.take(Some(4)).unwrap().1.req, Req::Status { id: 3 });
        assert_eq!(ring.front(), Some(&Req::Ping));
        ring.clear();
        assert_eq!(ring.len(), 0);
        assert_eq!(ring.push(Pending { req: Req::Ping, op_start: now }), 6);
    }
}
