//! The one error type of the client, and what each case tells the caller to do.

use std::fmt;

use tqx_wire::ErrorCode;

/// Why a call failed. Each case says whether the request may have taken
/// effect ([`ClientError::is_outcome_unknown`]) and whether the same call may
/// simply be made again ([`ClientError::is_retryable`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// No connection could be made (or remade) in `attempts` tries: the name
    /// did not resolve, the connection was refused or timed out, the hello
    /// failed, or the server was still recovering. Nothing of this call reached
    /// a server, or the call is safe to resend; either way it may be retried.
    Connect { addr: String, attempts: u32, reason: String },
    /// The connection dropped after the request was handed to it, before its
    /// reply came: the server may or may not have executed it. The client does
    /// not resend such a request unless it is safe to (then `resend_safe` is
    /// true, and this error means the resends ran out too).
    ConnectionLost { reason: String, resend_safe: bool },
    /// No reply within the request timeout (`ClientOptions::request_timeout_ms`,
    /// plus a dequeue's `wait_ms`); the outcome is unknown. The connection is
    /// kept: a late reply is dropped.
    Timeout { timeout_ms: u64, resend_safe: bool },
    /// The server answered with an error. [`ErrorCode::retryable`] says whether
    /// the same request may succeed later; `storage_failed` leaves the outcome
    /// unknown.
    Server { code: ErrorCode, message: String },
    /// The request holds a value no frame can carry (an empty idempotency key
    /// or group, a string over 65,535 bytes, `max_attempts: Some(0)`); the
    /// server's limits are far below these anyway. Nothing was sent.
    InvalidRequest { reason: String },
    /// The request's frame body is larger than the server accepts (its hello
    /// reply's `frame_body_bytes_max`). Nothing was sent.
    RequestTooLarge { body_bytes: usize, limit_bytes: usize },
    /// The server sent something this client cannot read: a reply it cannot
    /// decode (the connection is then closed, as the stream cannot be
    /// trusted), a reply of the wrong kind, or a hello it does not understand.
    /// The request, if there was one, may have been executed.
    Protocol { reason: String },
    /// TLS failed ([`crate::ClientOptions::tls`]): the server's certificate
    /// was refused (wrong CA, expired, another name), the server refused our
    /// client certificate, a PEM file could not be used, or the handshake
    /// failed otherwise; `reason` says which. Not retried: trying again with
    /// the same files fails the same way.
    Tls { reason: String },
}

impl ClientError {
    /// Whether making the same call again, unchanged, is safe and may succeed:
    /// connection failures, timeouts and lost connections of requests that are
    /// safe to resend, and the server's retryable codes (`overloaded`,
    /// `capacity_exceeded`, `shutting_down`, `recovering`).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Connect { .. } => true,
            ClientError::ConnectionLost { resend_safe, .. } | ClientError::Timeout { resend_safe, .. } => *resend_safe,
            ClientError::Server { code, .. } => code.retryable(),
            ClientError::InvalidRequest { .. }
            | ClientError::RequestTooLarge { .. }
            | ClientError::Protocol { .. }
            | ClientError::Tls { .. } => false,
        }
    }

    /// Whether the request may have taken effect although the call failed: the
    /// caller should look (for example with `get_task`) before repeating a call
    /// that is not safe to repeat.
    pub fn is_outcome_unknown(&self) -> bool {
        match self {
            ClientError::ConnectionLost { .. } | ClientError::Timeout { .. } | ClientError::Protocol { .. } => true,
            ClientError::Server { code, .. } => *code == ErrorCode::StorageFailed,
            ClientError::Connect { .. }
            | ClientError::InvalidRequest { .. }
            | ClientError::RequestTooLarge { .. }
            | ClientError::Tls { .. } => false,
        }
    }

    /// The server's error code, for [`ClientError::Server`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect { addr, attempts, reason } => {
                let tries = if *attempts == 1 { "1 attempt".to_string() } else { format!("{attempts} attempts") };
                write!(f, "cannot connect to {addr} ({tries}): {reason} (is `tqx serve --binary` running there?)")
            }
            ClientError::ConnectionLost { reason, resend_safe: false } => {
                write!(f, "the connection was lost before the reply, so the outcome is unknown: {reason}")
            }
            ClientError::ConnectionLost { reason, resend_safe: true } => {
                write!(f, "the connection was lost and the resends ran out: {reason}")
            }
            ClientError::Timeout { timeout_ms, .. } => {
                write!(f, "no reply within {timeout_ms} ms, so the outcome is unknown")
            }
            ClientError::Server { code, message } => write!(f, "{code}: {message}"),
            ClientError::InvalidRequest { reason } => write!(f, "invalid request, not sent: {reason}"),
            ClientError::RequestTooLarge { body_bytes, limit_bytes } => write!(
                f,
                "the request is {body_bytes} bytes, over the server's limit of {limit_bytes} bytes per frame body"
            ),
            ClientError::Protocol { reason } => write!(f, "protocol error: {reason}"),
            ClientError::Tls { reason } => write!(f, "TLS: {reason}"),
        }
    }
}

impl std::error::Error for ClientError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_and_unknown_outcomes() {
        let connect = ClientError::Connect { addr: "h:1".into(), attempts: 3, reason: "refused".into() };
        assert!(connect.is_retryable() && !connect.is_outcome_unknown());
        let lost = ClientError::ConnectionLost { reason: "reset".into(), resend_safe: false };
        assert!(!lost.is_retryable() && lost.is_outcome_unknown());
        let lost_safe = ClientError::ConnectionLost { reason: "reset".into(), resend_safe: true };
        assert!(lost_safe.is_retryable());
        let overloaded = ClientError::Server { code: ErrorCode::Overloaded, message: "full".into() };
        assert!(overloaded.is_retryable() && !overloaded.is_outcome_unknown());
        assert_eq!(overloaded.code(), Some(ErrorCode::Overloaded));
        let storage = ClientError::Server { code: ErrorCode::StorageFailed, message: "sync".into() };
        assert!(!storage.is_retryable() && storage.is_outcome_unknown());
        let large = ClientError::RequestTooLarge { body_bytes: 10, limit_bytes: 5 };
        assert!(!large.is_retryable() && !large.is_outcome_unknown());
        assert!(lost.to_string().contains("outcome is unknown"), "{lost}");
    }
}
