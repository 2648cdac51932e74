//! The fixed part of every body, exactly as it lies on the wire (little-endian,
//! no padding, alignment 1), so a decoder reads it in place from the receive
//! buffer and an encoder writes it with one copy. `docs/wire.md` has the same
//! tables with offsets; the size asserts below pin each struct to them.
//!
//! Field names are those of the specification. `reserved*` fields are sent as 0
//! and a decoder rejects anything else, so that a later version can give them a
//! meaning without old peers misreading it.

use zerocopy::little_endian::{I32, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Implemented by every fixed part, so the reader and writer can be generic.
pub(crate) trait Fixed: FromBytes + IntoBytes + KnownLayout + Immutable + Unaligned {}

/// Lengths inside variable parts (a dequeue's queue names) and dependency words.
impl Fixed for U16 {}
impl Fixed for U64 {}

macro_rules! fixed_parts {
    ($( $(#[$meta:meta])* struct $name:ident ($bytes:expr) { $($field:ident : $ty:ty),* $(,)? } )*) => {
        $(
            $(#[$meta])*
            #[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
            #[repr(C)]
            pub(crate) struct $name { $(pub(crate) $field: $ty),* }

            impl Fixed for $name {}

            const _: () = assert!(std::mem::size_of::<$name>() == $bytes);
        )*
    };
}

fixed_parts! {
    /// Hello request (8 bytes).
    struct HelloRequest(8) { version_min: u8, version_max: u8, reserved: [u8; 6] }

    /// Hello reply (8 bytes).
    struct HelloReply(8) { version: u8, reserved: [u8; 3], frame_body_bytes_max: U32 }

    /// Ping reply (8 bytes).
    struct PongReply(8) { ready: u8, reserved: [u8; 7] }

    /// Auth request (8 bytes), then `token`.
    struct AuthRequest(8) { token_len: U16, reserved: [u8; 6] }

    /// Auth reply (8 bytes).
    struct AuthReply(8) { scopes: u8, reserved: [u8; 7] }

    /// Configure-queue request (48 bytes), then `queue`.
    struct ConfigureQueueRequest(48) {
        present: U16,
        discipline: u8,
        reserved0: u8,
        max_attempts: U32,
        lease_ms: U64,
        backoff_ms: U64,
        backoff_max_ms: U64,
        retention_ms: U64,
        group_concurrency: U32,
        queue_len: U16,
        reserved1: U16,
    }

    /// Get-queue and enqueue requests (8 bytes), then `queue`.
    struct QueueNameRequest(8) { queue_len: U16, reserved: [u8; 6] }

    /// Delete-queue request (8 bytes), then `queue`.
    struct DeleteQueueRequest(8) { queue_len: U16, force: u8, reserved: [u8; 5] }

    /// Every list: batch requests and list replies (8 bytes), then `count` items.
    struct CountPart(8) { count: U32, reserved: U32 }

    /// One queue's settings and counts (104 bytes), then `name`.
    struct QueueInfoPart(104) {
        discipline: u8,
        flags: u8,
        name_len: U16,
        max_attempts: U32,
        lease_ms: U64,
        backoff_ms: U64,
        backoff_max_ms: U64,
        retention_ms: U64,
        group_concurrency: U32,
        dead_retention_ms: U32,
        counts: [U64; 7],
    }

    /// One task to enqueue (32 bytes), then `group`, `key`, `depends_count` deps,
    /// `payload`.
    struct TaskSpecPart(32) {
        priority: I32,
        max_attempts: U32,
        delay_ms: U64,
        payload_len: U32,
        depends_count: U16,
        group_len: U16,
        key_len: U16,
        reserved0: U16,
        reserved1: U32,
    }

    /// Enqueue-batch request (8 bytes), then `queue`, then `count` task specs.
    struct EnqueueBatchRequest(8) { queue_len: U16, reserved: U16, count: U32 }

    /// One enqueued task in a reply (16 bytes).
    struct EnqueuedPart(16) { id: U64, state: u8, created: u8, reserved: [u8; 6] }

    /// Dequeue request (24 bytes), then `queues_count` x (`len` U16, name).
    struct DequeueRequest(24) { max: U16, queues_count: U16, flags: U32, lease_ms: U64, wait_ms: U64 }

    /// One leased task (40 bytes), then `queue`, `group`, `payload`.
    struct LeasedTaskPart(40) {
        id: U64,
        lease: U64,
        lease_expires_at_ms: U64,
        priority: I32,
        attempt: U32,
        queue_len: U16,
        group_len: U16,
        payload_len: U32,
    }

    /// List-tasks request (16 bytes), then `queue`.
    struct ListTasksRequest(16) { after: U64, queue_len: U16, limit: U16, state: u8, reserved: [u8; 3] }

    /// List-tasks reply (16 bytes), then `count` task views (each a get-task
    /// reply's body).
    struct TaskPageReply(16) { count: U32, flags: U32, next_cursor: U64 }

    /// Get-task, cancel, retry-task and delete-task requests (8 bytes).
    struct IdRequest(8) { id: U64 }

    /// Get-task reply (80 bytes), then `queue`, `group`, `key`, deps, `error`,
    /// `payload`, `result`.
    struct TaskViewPart(80) {
        id: U64,
        created_at_ms: U64,
        updated_at_ms: U64,
        not_before_ms: U64,
        lease_expires_at_ms: U64,
        purge_at_ms: U64,
        priority: I32,
        attempts: U32,
        max_attempts: U32,
        state: u8,
        present: u8,
        queue_len: U16,
        group_len: U16,
        key_len: U16,
        error_len: U16,
        depends_count: U16,
        payload_len: U32,
        result_len: U32,
    }

    /// Complete request, and each item of a batch complete (24 bytes), then
    /// `result`.
    struct CompletePart(24) { id: U64, lease: U64, flags: U32, result_len: U32 }

    /// Fail request (24 bytes), then `error`.
    struct FailRequest(24) { id: U64, lease: U64, retry: u8, reserved0: u8, error_len: U16, reserved1: U32 }

    /// Extend request (24 bytes).
    struct ExtendRequest(24) { id: U64, lease: U64, lease_ms: U64 }

    /// Complete, fail and cancel reply (16 bytes).
    struct TaskStateReply(16) { id: U64, state: u8, reserved: [u8; 7] }

    /// Extend reply (16 bytes).
    struct ExtendedReply(16) { id: U64, lease_expires_at_ms: U64 }

    /// One outcome of a batch complete (16 bytes).
    struct CompleteOutcomePart(16) { id: U64, status: U16, state: u8, reserved: [u8; 5] }

    /// Error reply, any opcode (8 bytes), then `message`.
    struct ErrorReply(8) { message_len: U16, reserved: [u8; 6] }
}

// Bits of the flag and presence fields.

/// `ConfigureQueueRequest.present`.
pub(crate) const PATCH_DISCIPLINE: u16 = 1 << 0;
pub(crate) const PATCH_LEASE_MS: u16 = 1 << 1;
pub(crate) const PATCH_MAX_ATTEMPTS: u16 = 1 << 2;
pub(crate) const PATCH_BACKOFF_MS: u16 = 1 << 3;
pub(crate) const PATCH_BACKOFF_MAX_MS: u16 = 1 << 4;
pub(crate) const PATCH_RETENTION_MS: u16 = 1 << 5;
pub(crate) const PATCH_GROUP_CONCURRENCY_VALUE: u16 = 1 << 6;
pub(crate) const PATCH_GROUP_CONCURRENCY_UNLIMITED: u16 = 1 << 7;
/// Set: a U64 `dead_retention_ms` follows the queue name (a field added after
/// the fixed part was laid out, so requests without it keep their bytes).
pub(crate) const PATCH_DEAD_RETENTION_MS: u16 = 1 << 8;
pub(crate) const PATCH_ALL: u16 = (1 << 9) - 1;

/// `QueueInfoPart.flags`.
pub(crate) const QUEUE_INFO_GROUP_CONCURRENCY: u8 = 1 << 0;

/// `TaskPageReply.flags`: `next_cursor` is set (more tasks may follow).
pub(crate) const TASK_PAGE_NEXT_CURSOR: u32 = 1 << 0;

/// `DequeueRequest.flags`.
pub(crate) const DEQUEUE_LEASE_MS: u32 = 1 << 0;

/// `CompletePart.flags`.
pub(crate) const COMPLETE_RESULT: u32 = 1 << 0;

/// `TaskViewPart.present`.
pub(crate) const VIEW_NOT_BEFORE_MS: u8 = 1 << 0;
pub(crate) const VIEW_LEASE_EXPIRES_AT_MS: u8 = 1 << 1;
pub(crate) const VIEW_PURGE_AT_MS: u8 = 1 << 2;
pub(crate) const VIEW_RESULT: u8 = 1 << 3;
pub(crate) const VIEW_ERROR: u8 = 1 << 4;
pub(crate) const VIEW_GROUP: u8 = 1 << 5;
pub(crate) const VIEW_KEY: u8 = 1 << 6;
pub(crate) const VIEW_ALL: u8 = (1 << 7) - 1;

/// A dependency word with this bit set names a task of the same batch by index
/// (bits 0..31); bits 32..62 must then be 0. Clear: an existing task's id.
pub(crate) const DEP_BATCH_BIT: u64 = 1 << 63;

/// Bytes of one dependency word.
pub(crate) const DEP_BYTES: usize = 8;
/// Bytes of the smallest dequeue queue entry (a length of 0 and no name).
pub(crate) const DEQUEUE_QUEUE_BYTES_MIN: usize = 2;

/// The fixed part's size, for count checks (`count * size <= remaining`).
pub(crate) const fn size<T: Fixed>() -> usize {
    std::mem::size_of::<T>()
}
