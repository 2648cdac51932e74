//! Error codes, shared with the HTTP API's `error.code` strings, and the
//! decoder's error.

use std::fmt;

/// The `status` of a reply frame. 0 is success; every other value names an
/// error, and its text form is the HTTP API's `error.code` for the same case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    Ok = 0,
    MalformedRequest = 1,
    InvalidArgument = 2,
    TaskNotFound = 3,
    QueueNotFound = 4,
    LeaseMismatch = 5,
    LeaseExpired = 6,
    NotLeased = 7,
    TaskFinished = 8,
    QueueNotEmpty = 9,
    PayloadTooLarge = 10,
    Overloaded = 11,
    CapacityExceeded = 12,
    ShuttingDown = 13,
    Recovering = 14,
    StorageFailed = 15,
    /// Binary protocol only: the header's version is not one the server speaks.
    UnsupportedVersion = 16,
    /// Binary protocol only: the opcode is not one the server knows.
    UnknownOpcode = 17,
    /// Binary protocol only: a request came before the connection's hello.
    HandshakeRequired = 18,
    /// No token, or one the server does not accept (HTTP 401): the server
    /// has tokens configured and this connection has not authenticated.
    Unauthenticated = 19,
    /// The token does not grant the scope the request needs on its queue
    /// (HTTP 403); the message names the scope.
    Forbidden = 20,
    /// Retry of a task that is not dead (HTTP 409).
    TaskNotDead = 21,
    /// Delete of a task that has not finished (HTTP 409): cancel it first.
    TaskNotFinished = 22,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 23] = [
        ErrorCode::Ok,
        ErrorCode::MalformedRequest,
        ErrorCode::InvalidArgument,
        ErrorCode::TaskNotFound,
        ErrorCode::QueueNotFound,
        ErrorCode::LeaseMismatch,
        ErrorCode::LeaseExpired,
        ErrorCode::NotLeased,
        ErrorCode::TaskFinished,
        ErrorCode::QueueNotEmpty,
        ErrorCode::PayloadTooLarge,
        ErrorCode::Overloaded,
        ErrorCode::CapacityExceeded,
        ErrorCode::ShuttingDown,
        ErrorCode::Recovering,
        ErrorCode::StorageFailed,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnknownOpcode,
        ErrorCode::HandshakeRequired,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::TaskNotDead,
        ErrorCode::TaskNotFinished,
    ];

    pub fn from_u16(value: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.get(value as usize).copied()
    }

    /// The HTTP API's `error.code` for the same case.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Ok => "ok",
            ErrorCode::MalformedRequest => "malformed_request",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::TaskNotFound => "task_not_found",
            ErrorCode::QueueNotFound => "queue_not_found",
            ErrorCode::LeaseMismatch => "lease_mismatch",
            ErrorCode::LeaseExpired => "lease_expired",
            ErrorCode::NotLeased => "not_leased",
            ErrorCode::TaskFinished => "task_finished",
            ErrorCode::QueueNotEmpty => "queue_not_empty",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::CapacityExceeded => "capacity_exceeded",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Recovering => "recovering",
            ErrorCode::StorageFailed => "storage_failed",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnknownOpcode => "unknown_opcode",
            ErrorCode::HandshakeRequired => "handshake_required",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TaskNotDead => "task_not_dead",
            ErrorCode::TaskNotFinished => "task_not_finished",
        }
    }

    pub fn from_code(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == code)
    }

    /// Whether the same request may succeed later, unchanged (after a pause).
    /// `storage_failed` is not: the outcome is unknown, and only a request that
    /// is safe to repeat (an enqueue with an idempotency key) should be resent.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Overloaded | ErrorCode::CapacityExceeded | ErrorCode::ShuttingDown | ErrorCode::Recovering
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a frame's body (whose framing was fine) could not be decoded. The
/// receiver answers it with an error reply and keeps the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// `MalformedRequest` (the body does not fit the opcode's layout),
    /// `InvalidArgument` (a field's value is out of its domain),
    /// `UnknownOpcode` or `UnsupportedVersion`.
    pub code: ErrorCode,
    pub message: String,
}

impl DecodeError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> DecodeError {
        DecodeError { code, message: message.into() }
    }

    pub fn malformed(message: impl Into<String>) -> DecodeError {
        DecodeError::new(ErrorCode::MalformedRequest, message)
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for DecodeError {}

/// Why a value cannot be put into a frame: a length or count is over what its
/// field holds (a string over 65,535 bytes where the length is a U16, a body
/// over 4 GiB), or a value has no encoding (an empty group or key in a task
/// spec, where length 0 means "none"; a task id with bit 63 set as a
/// dependency). Every such value is also far outside the engine's limits, so the
/// server would refuse it anyway; a client reports it without sending anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodeError {
    /// Names the field and the bound (`task.key is 70000 bytes, at most 65535 fit`).
    pub message: String,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot encode: {}", self.message)
    }
}

impl std::error::Error for EncodeError {}
