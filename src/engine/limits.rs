//! Every bound the engine enforces, in one place, with its unit in its name.
//!
//! A request that exceeds a bound gets `EngineError::Invalid` naming the field (or
//! `CapacityExceeded` for the engine-wide counts, which the caller may retry later);
//! nothing grows without bound because a client asked it to.

/// Queue names appear in URLs and logs, so they are short and URL-safe
/// (`[A-Za-z0-9_.:-]`).
pub const QUEUE_NAME_BYTES_MAX: usize = 128;
/// Group keys are client strings held once per live group of a queue.
pub const GROUP_NAME_BYTES_MAX: usize = 128;
/// Idempotency keys are held for the lifetime of their task (until purged).
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 256;
/// Payloads are held in memory until purged; 1 MiB matches the HTTP body limit.
pub const PAYLOAD_BYTES_MAX: usize = 1 << 20;
/// A completed task's result is held until its retention ends.
pub const RESULT_BYTES_MAX: usize = 1 << 20;
/// A failure's error message (also the reason a dependent was cancelled).
pub const ERROR_MESSAGE_BYTES_MAX: usize = 4 << 10;
/// Dependencies of one task. Completing a task costs O(its dependents), and each
/// dependent pays for this list once, so this bounds the work a single enqueue adds.
pub const DEPENDS_ON_COUNT_MAX: usize = 1024;
/// Tasks in one atomic batch: the batch is validated in full before it is applied,
/// so this bounds the latency one request can add to everyone behind it.
pub const BATCH_TASKS_COUNT_MAX: usize = 10_000;
/// Tasks one dequeue may lease.
pub const DEQUEUE_TASKS_COUNT_MAX: usize = 1_000;
/// Queues one dequeue may name.
pub const DEQUEUE_QUEUES_COUNT_MAX: usize = 64;
/// Leases run from 1 ms to 24 h; a longer job extends its lease.
pub const LEASE_MS_MIN: u64 = 1;
pub const LEASE_MS_MAX: u64 = 24 * 3_600_000;
/// Delays up to 366 days.
pub const DELAY_MS_MAX: u64 = 366 * 24 * 3_600_000;
/// Attempts per task.
pub const MAX_ATTEMPTS_MAX: u32 = 1_000;
/// Retry backoff base and cap.
pub const BACKOFF_MS_MAX: u64 = 24 * 3_600_000;
/// How long finished tasks (and their idempotency keys) are kept: up to 30 days.
pub const RETENTION_MS_MAX: u64 = 30 * 24 * 3_600_000;
/// How long dead tasks are kept by default: 7 days, for an operator to read,
/// retry or delete them (`dead_retention_ms`, up to `RETENTION_MS_MAX`).
pub const DEAD_RETENTION_MS_DEFAULT: u64 = 7 * 24 * 3_600_000;
/// Tasks one listing (`Engine::list_tasks`) returns at most, and how many it
/// returns when the request does not say. Each is copied (payload included)
/// under the engine lock, so this bounds that copy: at most 1,000 payloads.
pub const LIST_TASKS_COUNT_MAX: usize = 1_000;
pub const LIST_TASKS_COUNT_DEFAULT: usize = 100;
/// A listing page stops adding tasks once their payloads, results and errors
/// reach this many bytes (it always holds at least one task, so a listing
/// always advances): with payloads of up to 1 MiB, `LIST_TASKS_COUNT_MAX`
/// alone would let one read copy a gigabyte under the engine lock.
pub const LIST_TASKS_PAGE_BYTES_MAX: usize = 4 << 20;
/// Task ids one listing examines at most when it walks the id space (every
/// state but `dead`, which has its own index per queue): each costs one id
/// lookup (~20-50 ns), so a listing holds the engine lock for about a
/// millisecond at worst; a page that runs out of budget ends early with a
/// cursor to go on from.
pub const LIST_TASKS_SCAN_IDS_MAX: u64 = 32_768;
/// `group_concurrency`, when set.
pub const GROUP_CONCURRENCY_MAX: u32 = 1_000_000;

/// Engine-wide default for the number of queues (each costs a few hundred bytes).
pub const QUEUES_COUNT_MAX_DEFAULT: usize = 10_000;
/// Engine-wide default for the number of tasks held in memory, in any state
/// (roughly 110-200 bytes each plus payload, docs/engine.md "Memory per task";
/// 50 M is ~5-10 GiB before payloads).
pub const TASKS_COUNT_MAX_DEFAULT: usize = 50_000_000;

const _: () = assert!(LEASE_MS_MIN >= 1 && LEASE_MS_MIN <= LEASE_MS_MAX);
const _: () = assert!(DEQUEUE_TASKS_COUNT_MAX <= BATCH_TASKS_COUNT_MAX);
const _: () = assert!(DEAD_RETENTION_MS_DEFAULT <= RETENTION_MS_MAX);
const _: () = assert!(LIST_TASKS_COUNT_DEFAULT >= 1 && LIST_TASKS_COUNT_DEFAULT <= LIST_TASKS_COUNT_MAX);
// The wire's queue info carries `dead_retention_ms` in 32 bits (docs/wire.md).
const _: () = assert!(RETENTION_MS_MAX <= u32::MAX as u64);
// Timer keys pack `due_ms` into 64 bits; every `now + x` is computed with
// saturating adds, and these bounds keep real sums far from saturation.
const _: () = assert!(DELAY_MS_MAX < (1 << 40) && RETENTION_MS_MAX < (1 << 40));
