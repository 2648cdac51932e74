//! The contents of a log record: a state-changing [`Command`] as a worker
//! executed it, with the time it passed the engine, or an engine tick, or the
//! engine's seed. Compact, little-endian, versioned by the segment format.
//!
//! ```text
//! record  = kind:u8  now_ms:u64  body
//! string  = len:u16 bytes        (UTF-8; every string limit fits u16, src/limits.rs)
//! bytes   = len:u32 bytes
//! option  = 0:u8 | 1:u8 value
//! ```
//! Decoding never panics and never allocates more than the record holds: every
//! length is checked against the bytes that remain (records are checksummed
//! before they get here, but the decoder does not rely on that).

use bytes::Bytes;

use super::format::RECORD_PAYLOAD_BYTES_MAX;
use crate::command::{Command, CompleteItem};
use crate::engine::{DepRef, Discipline, NewTask, QueueConfigPatch};

/// One log record's meaning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Command(Command),
    /// `Engine::tick(now_ms, work_max)`.
    Tick {
        work_max: u32,
    },
    /// The engine's seed: the first record of a log.
    Seed(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub now_ms: u64,
    pub entry: Entry,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "undecodable log record: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

mod kind {
    pub const CONFIGURE_QUEUE: u8 = 1;
    pub const DELETE_QUEUE: u8 = 2;
    pub const ENQUEUE: u8 = 3;
    pub const ENQUEUE_BATCH: u8 = 4;
    pub const DEQUEUE: u8 = 5;
    pub const COMPLETE: u8 = 6;
    pub const FAIL: u8 = 7;
    pub const EXTEND: u8 = 8;
    pub const CANCEL: u8 = 9;
    pub const TICK: u8 = 10;
    pub const SEED: u8 = 11;
    /// `count:u32`, then per item `id:u64 lease:u64 result:option<bytes>`.
    pub const COMPLETE_BATCH: u8 = 12;
}

/// Whether a command changes engine state and so belongs in the log. Reads do
/// not; a dequeue does (its leases), though its reply need not wait for a sync.
pub fn is_logged(command: &Command) -> bool {
    !matches!(command, Command::ListQueues | Command::GetQueue { .. } | Command::GetTask { .. })
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    fn string(&mut self, s: &str) {
        // `command::check_limits` refuses, at the protocol edge, every string
        // longer than its limit, and src/limits.rs asserts at compile time that
        // each limit fits a u16: a longer string here is a bug in the edge,
        // never a client's doing, and logging a mangled length would corrupt
        // replay, so stop loudly.
        let Ok(length) = u16::try_from(s.len()) else {
            panic!(
                "a {}-byte string reached the log encoder: the protocol edge (command::check_limits) must refuse \
                 strings over their limits (src/limits.rs)",
                s.len()
            )
        };
        self.0.extend_from_slice(&length.to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        // Likewise: payloads and results are at most 1 MiB past the edge.
        let Ok(length) = u32::try_from(b.len()) else {
            panic!("{} bytes reached the log encoder as one field: the protocol edge must refuse them", b.len())
        };
        self.u32(length);
        self.0.extend_from_slice(b);
    }
    fn count(&mut self, count: usize) {
        // Counts are bounded by BATCH_TASKS_COUNT_MAX and friends at the edge.
        let Ok(count) = u32::try_from(count) else {
            panic!("a count of {count} reached the log encoder: the protocol edge must refuse it")
        };
        self.u32(count);
    }
    fn option<T>(&mut self, value: &Option<T>, mut write: impl FnMut(&mut Self, &T)) {
        match value {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                write(self, v);
            }
        }
    }
    fn task(&mut self, task: &NewTask) {
        self.bytes(&task.payload);
        self.i32(task.priority);
        self.option(&task.group, |w, g| w.string(g));
        self.u64(task.delay_ms);
        self.option(&task.max_attempts, |w, n| w.u32(*n));
        self.count(task.depends_on.len());
        for dep in &task.depends_on {
            match *dep {
                DepRef::Task(id) => {
                    self.u8(0);
                    self.u64(id);
                }
                DepRef::Batch(k) => {
                    self.u8(1);
                    self.u64(k as u64);
                }
            }
        }
        self.option(&task.key, |w, k| w.string(k));
    }
}

fn discipline_code(d: Discipline) -> u8 {
    match d {
        Discipline::Fifo => 0,
        Discipline::Lifo => 1,
        Discipline::Priority => 2,
        Discipline::RoundRobin => 3,
    }
}

/// Appends `record` to `out`.
///
/// Panics on a command the log must not hold (a read): callers log only what
/// [`is_logged`] accepts.
pub fn encode(record: &LogRecord, out: &mut Vec<u8>) {
    match &record.entry {
        Entry::Command(command) => encode_command(record.now_ms, command, out),
        Entry::Tick { work_max } => {
            let mut w = Writer(out);
            w.u8(kind::TICK);
            w.u64(record.now_ms);
            w.u32(*work_max);
        }
        Entry::Seed(seed) => {
            let mut w = Writer(out);
            w.u8(kind::SEED);
            w.u64(record.now_ms);
            w.u64(*seed);
        }
    }
}

/// Appends the record of `command` executed at `now_ms` (the same bytes as
/// [`encode`] of `Entry::Command`), without moving the command into a
/// [`LogRecord`]: workers encode a command just before executing it.
///
/// `command` must have passed `command::check_limits` (both protocols check
/// every command they build): then every length fits its field and the record
/// fits [`RECORD_PAYLOAD_BYTES_MAX`] (`limits::RECORD_BYTES_OVER_BODY_MAX`,
/// checked at compile time and at start against `--max-body-bytes`). A command
/// that did not is a bug in an edge and stops the process with a message that
/// says so, before anything is logged. Panics on a read too, which the log
/// must not hold (see [`is_logged`]).
pub fn encode_command(now_ms: u64, command: &Command, out: &mut Vec<u8>) {
    let start = out.len();
    encode_command_unchecked(now_ms, command, out);
    let record_bytes = out.len() - start;
    assert!(
        record_bytes <= RECORD_PAYLOAD_BYTES_MAX,
        "a {record_bytes}-byte log record, over the {RECORD_PAYLOAD_BYTES_MAX}-byte limit: the protocol edge and \
         --max-body-bytes must make this impossible (src/limits.rs)"
    );
}

fn encode_command_unchecked(now_ms: u64, command: &Command, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    let kind = match command {
        Command::ConfigureQueue { .. } => kind::CONFIGURE_QUEUE,
        Command::DeleteQueue { .. } => kind::DELETE_QUEUE,
        Command::Enqueue { .. } => kind::ENQUEUE,
        Command::EnqueueBatch { .. } => kind::ENQUEUE_BATCH,
        Command::Dequeue { .. } => kind::DEQUEUE,
        Command::Complete { .. } => kind::COMPLETE,
        Command::Fail { .. } => kind::FAIL,
        Command::Extend { .. } => kind::EXTEND,
        Command::Cancel { .. } => kind::CANCEL,
        Command::CompleteBatch { .. } => kind::COMPLETE_BATCH,
        Command::ListQueues | Command::GetQueue { .. } | Command::GetTask { .. } => panic!("reads are not logged"),
    };
    w.u8(kind);
    w.u64(now_ms);
    match command {
        Command::ConfigureQueue { queue, patch } => {
            w.string(queue);
            w.option(&patch.discipline, |w, d| w.u8(discipline_code(*d)));
            w.option(&patch.lease_ms, |w, v| w.u64(*v));
            w.option(&patch.max_attempts, |w, v| w.u32(*v));
            w.option(&patch.backoff_ms, |w, v| w.u64(*v));
            w.option(&patch.backoff_max_ms, |w, v| w.u64(*v));
            w.option(&patch.retention_ms, |w, v| w.u64(*v));
            w.option(&patch.group_concurrency, |w, limit| w.option(limit, |w, v| w.u32(*v)));
        }
        Command::DeleteQueue { queue, force } => {
            w.string(queue);
            w.bool(*force);
        }
        Command::Enqueue { queue, task } => {
            w.string(queue);
            w.task(task);
        }
        Command::EnqueueBatch { queue, tasks } => {
            w.string(queue);
            w.count(tasks.len());
            for task in tasks {
                w.task(task);
            }
        }
        Command::Dequeue { queues, max, lease_ms, wait_ms: _ } => {
            w.count(queues.len());
            for queue in queues {
                w.string(queue);
            }
            // `max` is not checked at the edge (the engine refuses it past
            // DEQUEUE_TASKS_COUNT_MAX), so it saturates: the replayed dequeue
            // is refused the same way.
            w.u32(u32::try_from(*max).unwrap_or(u32::MAX));
            w.option(lease_ms, |w, v| w.u64(*v));
        }
        Command::Complete { id, lease, result } => {
            w.u64(*id);
            w.u64(*lease);
            w.option(result, |w, r| w.bytes(r));
        }
        Command::Fail { id, lease, error, retry } => {
            w.u64(*id);
            w.u64(*lease);
            w.string(error);
            w.bool(*retry);
        }
        Command::Extend { id, lease, lease_ms } => {
            w.u64(*id);
            w.u64(*lease);
            w.u64(*lease_ms);
        }
        Command::Cancel { id } => w.u64(*id),
        Command::CompleteBatch { items } => {
            w.count(items.len());
            for item in items {
                w.u64(item.id);
                w.u64(item.lease);
                w.option(&item.result, |w, r| w.bytes(r));
            }
        }
        Command::ListQueues | Command::GetQueue { .. } | Command::GetTask { .. } => unreachable!("checked above"),
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError(format!("{n} bytes wanted, {} left", self.bytes.len())));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| DecodeError("u32".into()))?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| DecodeError("u64".into()))?))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_le_bytes(self.take(4)?.try_into().map_err(|_| DecodeError("i32".into()))?))
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError(format!("bool {other}"))),
        }
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let length = u16::from_le_bytes(self.take(2)?.try_into().map_err(|_| DecodeError("length".into()))?);
        let bytes = self.take(length.into())?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError("a string that is not UTF-8".into()))
    }
    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let length = self.u32()? as usize;
        Ok(Bytes::copy_from_slice(self.take(length)?))
    }
    fn option<T>(
        &mut self,
        mut read: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(read(self)?)),
            other => Err(DecodeError(format!("option tag {other}"))),
        }
    }
    /// A count of items each at least `item_bytes_min` long: refused if the
    /// record cannot hold that many, so a corrupt count cannot make us allocate.
    fn count(&mut self, item_bytes_min: usize) -> Result<usize, DecodeError> {
        let count = self.u32()? as usize;
        if count.saturating_mul(item_bytes_min) > self.bytes.len() {
            return Err(DecodeError(format!("a count of {count} in {} bytes", self.bytes.len())));
        }
        Ok(count)
    }
    fn task(&mut self) -> Result<NewTask, DecodeError> {
        let payload = self.bytes()?;
        let priority = self.i32()?;
        let group = self.option(Self::string)?;
        let delay_ms = self.u64()?;
        let max_attempts = self.option(Self::u32)?;
        let count = self.count(9)?;
        let mut depends_on = Vec::with_capacity(count);
        for _ in 0..count {
            depends_on.push(match self.u8()? {
                0 => DepRef::Task(self.u64()?),
                1 => DepRef::Batch(usize::try_from(self.u64()?).map_err(|_| DecodeError("batch index".into()))?),
                other => return Err(DecodeError(format!("dependency tag {other}"))),
            });
        }
        let key = self.option(Self::string)?;
        Ok(NewTask { payload, priority, group, delay_ms, max_attempts, depends_on, key })
    }
}

/// Reads one record; fails on anything malformed or left over.
pub fn decode(bytes: &[u8]) -> Result<LogRecord, DecodeError> {
    let mut r = Reader { bytes };
    let kind = r.u8()?;
    let now_ms = r.u64()?;
    let entry = match kind {
        kind::TICK => Entry::Tick { work_max: r.u32()? },
        kind::SEED => Entry::Seed(r.u64()?),
        kind::CONFIGURE_QUEUE => {
            let queue = r.string()?;
            let discipline = r.option(|r| match r.u8()? {
                0 => Ok(Discipline::Fifo),
                1 => Ok(Discipline::Lifo),
                2 => Ok(Discipline::Priority),
                3 => Ok(Discipline::RoundRobin),
                other => Err(DecodeError(format!("discipline {other}"))),
            })?;
            let patch = QueueConfigPatch {
                discipline,
                lease_ms: r.option(Reader::u64)?,
                max_attempts: r.option(Reader::u32)?,
                backoff_ms: r.option(Reader::u64)?,
                backoff_max_ms: r.option(Reader::u64)?,
                retention_ms: r.option(Reader::u64)?,
                group_concurrency: r.option(|r| r.option(Reader::u32))?,
            };
            Entry::Command(Command::ConfigureQueue { queue, patch })
        }
        kind::DELETE_QUEUE => Entry::Command(Command::DeleteQueue { queue: r.string()?, force: r.bool()? }),
        kind::ENQUEUE => Entry::Command(Command::Enqueue { queue: r.string()?, task: r.task()? }),
        kind::ENQUEUE_BATCH => {
            let queue = r.string()?;
            let count = r.count(4 + 4 + 1 + 8 + 1 + 4 + 1)?;
            let mut tasks = Vec::with_capacity(count);
            for _ in 0..count {
                tasks.push(r.task()?);
            }
            Entry::Command(Command::EnqueueBatch { queue, tasks })
        }
        kind::DEQUEUE => {
            let count = r.count(2)?;
            let mut queues = Vec::with_capacity(count);
            for _ in 0..count {
                queues.push(r.string()?);
            }
            let max = r.u32()? as usize;
            let lease_ms = r.option(Reader::u64)?;
            Entry::Command(Command::Dequeue { queues, max, lease_ms, wait_ms: 0 })
        }
        kind::COMPLETE => {
            Entry::Command(Command::Complete { id: r.u64()?, lease: r.u64()?, result: r.option(Reader::bytes)? })
        }
        kind::FAIL => {
            Entry::Command(Command::Fail { id: r.u64()?, lease: r.u64()?, error: r.string()?, retry: r.bool()? })
        }
        kind::EXTEND => Entry::Command(Command::Extend { id: r.u64()?, lease: r.u64()?, lease_ms: r.u64()? }),
        kind::CANCEL => Entry::Command(Command::Cancel { id: r.u64()? }),
        kind::COMPLETE_BATCH => {
            let count = r.count(8 + 8 + 1)?;
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                items.push(CompleteItem { id: r.u64()?, lease: r.u64()?, result: r.option(Reader::bytes)? });
            }
            Entry::Command(Command::CompleteBatch { items })
        }
        other => return Err(DecodeError(format!("record kind {other}"))),
    };
    if !r.bytes.is_empty() {
        return Err(DecodeError(format!("{} bytes left over", r.bytes.len())));
    }
    Ok(LogRecord { now_ms, entry })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn text(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(any::<char>(), 0..max).prop_map(|c| c.into_iter().collect())
    }

    fn task() -> impl Strategy<Value = NewTask> {
        (
            prop::collection::vec(any::<u8>(), 0..64),
            any::<i32>(),
            prop::option::of(text(8)),
            any::<u64>(),
            prop::option::of(any::<u32>()),
            prop::collection::vec(
                prop_oneof![any::<u64>().prop_map(DepRef::Task), (0usize..100).prop_map(DepRef::Batch)],
                0..4,
            ),
            prop::option::of(text(8)),
        )
            .prop_map(|(payload, priority, group, delay_ms, max_attempts, depends_on, key)| NewTask {
                payload: Bytes::from(payload),
                priority,
                group,
                delay_ms,
                max_attempts,
                depends_on,
                key,
            })
    }

    fn discipline() -> impl Strategy<Value = Discipline> {
        prop_oneof![
            Just(Discipline::Fifo),
            Just(Discipline::Lifo),
            Just(Discipline::Priority),
            Just(Discipline::RoundRobin)
        ]
    }

    fn entry() -> impl Strategy<Value = Entry> {
        let o64 = || prop::option::of(any::<u64>());
        prop_oneof![
            any::<u32>().prop_map(|work_max| Entry::Tick { work_max }),
            any::<u64>().prop_map(Entry::Seed),
            (
                text(8),
                prop::option::of(discipline()),
                o64(),
                prop::option::of(any::<u32>()),
                o64(),
                o64(),
                o64(),
                prop::option::of(prop::option::of(any::<u32>()))
            )
                .prop_map(
                    |(
                        queue,
                        discipline,
                        lease_ms,
                        max_attempts,
                        backoff_ms,
                        backoff_max_ms,
                        retention_ms,
                        group_concurrency,
                    )| {
                        let patch = QueueConfigPatch {
                            discipline,
                            lease_ms,
                            max_attempts,
                            backoff_ms,
                            backoff_max_ms,
                            retention_ms,
                            group_concurrency,
                        };
                        Entry::Command(Command::ConfigureQueue { queue, patch })
                    }
                ),
            (text(8), any::<bool>()).prop_map(|(queue, force)| Entry::Command(Command::DeleteQueue { queue, force })),
            (text(8), task()).prop_map(|(queue, task)| Entry::Command(Command::Enqueue { queue, task })),
            (text(8), prop::collection::vec(task(), 0..4))
                .prop_map(|(queue, tasks)| Entry::Command(Command::EnqueueBatch { queue, tasks })),
            (prop::collection::vec(text(8), 0..4), 0usize..2000, o64()).prop_map(|(queues, max, lease_ms)| {
                Entry::Command(Command::Dequeue { queues, max, lease_ms, wait_ms: 0 })
            }),
            (any::<u64>(), any::<u64>(), prop::option::of(prop::collection::vec(any::<u8>(), 0..32))).prop_map(
                |(id, lease, result)| Entry::Command(Command::Complete { id, lease, result: result.map(Bytes::from) })
            ),
            (any::<u64>(), any::<u64>(), text(16), any::<bool>())
                .prop_map(|(id, lease, error, retry)| Entry::Command(Command::Fail { id, lease, error, retry })),
            (any::<u64>(), any::<u64>(), any::<u64>())
                .prop_map(|(id, lease, lease_ms)| Entry::Command(Command::Extend { id, lease, lease_ms })),
            any::<u64>().prop_map(|id| Entry::Command(Command::Cancel { id })),
            prop::collection::vec(
                (any::<u64>(), any::<u64>(), prop::option::of(prop::collection::vec(any::<u8>(), 0..32))),
                0..5
            )
            .prop_map(|items| Entry::Command(Command::CompleteBatch {
                items: items
                    .into_iter()
                    .map(|(id, lease, result)| CompleteItem { id, lease, result: result.map(Bytes::from) })
                    .collect()
            })),
        ]
    }

    proptest! {
        #[test]
        fn every_record_decodes_to_what_was_encoded(now_ms in any::<u64>(), entry in entry()) {
            let record = LogRecord { now_ms, entry };
            let mut bytes = Vec::new();
            encode(&record, &mut bytes);
            prop_assert_eq!(decode(&bytes), Ok(record));
            // Every strict prefix is refused, never misread.
            for cut in 0..bytes.len() {
                prop_assert!(decode(&bytes[..cut]).is_err());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn a_huge_count_in_a_small_record_is_refused_without_allocating() {
        let mut bytes = vec![kind::ENQUEUE_BATCH];
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(&1u16.to_le_bytes());
        bytes.push(b'q');
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&bytes).unwrap_err().0.contains("a count of"));
    }

    #[test]
    fn a_batch_complete_record_round_trips_with_its_results() {
        let items = vec![
            CompleteItem { id: 7, lease: u64::MAX, result: Some(Bytes::from_static(&[0xff, 0, 0xfe])) },
            CompleteItem { id: 8, lease: 1, result: None },
        ];
        let record = LogRecord { now_ms: 42, entry: Entry::Command(Command::CompleteBatch { items }) };
        let mut bytes = Vec::new();
        encode(&record, &mut bytes);
        assert_eq!(bytes[0], kind::COMPLETE_BATCH);
        assert_eq!(decode(&bytes), Ok(record));
        // A count the record cannot hold is refused before anything is reserved.
        let mut huge = vec![kind::COMPLETE_BATCH];
        huge.extend_from_slice(&0u64.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).unwrap_err().0.contains("a count of"));
    }

    /// Unreachable from a client (`command::check_limits` refuses such a
    /// command at the edge); if an edge forgets a field, the process stops
    /// with a message that names the cause instead of logging a bad record.
    #[test]
    #[should_panic(expected = "the protocol edge (command::check_limits) must refuse")]
    fn a_string_the_edge_should_have_refused_stops_with_the_reason() {
        let command = Command::Fail { id: 1, lease: 1, error: "x".repeat(70_000), retry: true };
        encode_command(0, &command, &mut Vec::new());
    }

    #[test]
    fn reads_are_not_logged() {
        assert!(!is_logged(&Command::ListQueues));
        assert!(!is_logged(&Command::GetTask { id: 1 }));
        assert!(is_logged(&Command::Cancel { id: 1 }));
        assert!(is_logged(&Command::CompleteBatch { items: Vec::new() }));
    }
}
