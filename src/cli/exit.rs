//! The client subcommands' exit codes: one per kind of outcome a script has to
//! tell apart, decided from the server's error `code` (the same string over
//! both protocols: `EngineError::code`, the wire's `ErrorCode`), never from
//! its message text. The table is printed in `tqx --help` ([`HELP`]) and in
//! docs/cli.md; a test below checks that they agree.

use std::process::ExitCode;

/// How a client subcommand ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Exit {
    /// The server did what was asked.
    Ok = 0,
    /// Anything else that went wrong: the server failed (`storage_failed`),
    /// answered something that is not a TaskQueueX reply, refused a request
    /// the CLI built (a CLI bug: `malformed_request`), or TLS failed.
    Error = 1,
    /// The command is wrong: clap's own errors, a body that is not JSON, a
    /// file that cannot be read, a bad server address, and the server's
    /// `invalid_argument` and `payload_too_large` (the same command fails again).
    Usage = 2,
    /// No such task, queue or path (`task_not_found`, `queue_not_found`, 404).
    NotFound = 3,
    /// A conflict with the current state (409: `lease_mismatch`, `lease_expired`,
    /// `not_leased`, `task_finished`, `task_not_dead`, `task_not_finished`,
    /// `queue_not_empty`).
    Conflict = 4,
    /// Try again later: the server cannot be reached, the connection was lost,
    /// no reply in time, or it answered `overloaded`, `capacity_exceeded`,
    /// `shutting_down` or `recovering` (503).
    Unavailable = 5,
    /// The token is missing or refused (401 `unauthenticated`), or lacks a
    /// scope (403 `forbidden`).
    Auth = 6,
}

/// A client subcommand that failed: its exit, and what to print on stderr
/// after `tqx NAME: ` (one line or more).
#[derive(Debug)]
pub(super) struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub(super) fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure { exit, message: message.into() }
    }

    pub(super) fn usage(message: impl Into<String>) -> Failure {
        Failure::new(Exit::Usage, message)
    }

    /// Prints the message as `tqx NAME: message` and gives the exit code.
    pub(super) fn report(&self, name: &str) -> ExitCode {
        eprintln!("tqx {name}: {}", self.message);
        self.exit.code()
    }
}

/// The table in `tqx --help`; docs/cli.md has the same rows (checked below).
pub(super) const HELP: &str = "\
Exit codes of the client subcommands:
  0  ok
  1  other error: the server failed (storage_failed), its reply is unreadable, or TLS failed
  2  usage: a bad command line, a body that is not JSON, an unreadable file, a bad --server,
     or the server's invalid_argument / payload_too_large
  3  not found: task_not_found, queue_not_found, or no such path
  4  conflict: the task's or queue's state forbids it (every 409 code)
  5  unavailable: cannot connect, connection lost, timed out, or overloaded, capacity_exceeded,
     shutting_down, recovering (503)
  6  auth: the token is missing or refused (401), or lacks a scope (403)";

impl Exit {
    pub(super) fn code(self) -> ExitCode {
        ExitCode::from(self as u8)
    }

    /// The exit for an error `code` a server answered, over either protocol;
    /// `http_status` decides for a code the wire does not have (the HTTP
    /// router's own: `not_found`, `method_not_allowed`, `length_required`,
    /// `headers_too_large`) or a reply without a code.
    pub(super) fn of_server_code(code: &str, http_status: Option<u16>) -> Exit {
        match tqx_client::ErrorCode::from_code(code) {
            Some(code) => Exit::of_wire_code(code),
            None => match http_status {
                Some(401 | 403) => Exit::Auth,
                Some(404 | 410) => Exit::NotFound,
                Some(409) => Exit::Conflict,
                Some(400 | 413 | 422) => Exit::Usage,
                Some(503 | 429) => Exit::Unavailable,
                _ => Exit::Error,
            },
        }
    }

    /// Every code either protocol may answer; `match` without a wildcard so
    /// that a new code cannot be forgotten here.
    fn of_wire_code(code: tqx_client::ErrorCode) -> Exit {
        use tqx_client::ErrorCode as C;
        match code {
            C::Ok => Exit::Ok,
            C::InvalidArgument | C::PayloadTooLarge => Exit::Usage,
            C::TaskNotFound | C::QueueNotFound => Exit::NotFound,
            C::LeaseMismatch
            | C::LeaseExpired
            | C::NotLeased
            | C::TaskFinished
            | C::QueueNotEmpty
            | C::TaskNotDead
            | C::TaskNotFinished => Exit::Conflict,
            C::Overloaded | C::CapacityExceeded | C::ShuttingDown | C::Recovering => Exit::Unavailable,
            C::Unauthenticated | C::Forbidden => Exit::Auth,
            C::MalformedRequest
            | C::StorageFailed
            | C::UnsupportedVersion
            | C::UnknownOpcode
            | C::HandshakeRequired => Exit::Error,
        }
    }

    /// The exit for a `--binary` call that failed.
    pub(super) fn of_binary_error(error: &tqx_client::ClientError) -> Exit {
        use tqx_client::ClientError as E;
        match error {
            E::Server { code, .. } => Exit::of_wire_code(*code),
            E::Connect { .. } | E::ConnectionLost { .. } | E::Timeout { .. } => Exit::Unavailable,
            E::InvalidRequest { .. } | E::RequestTooLarge { .. } => Exit::Usage,
            E::Protocol { .. } | E::Tls { .. } => Exit::Error,
        }
    }

    /// The exit for an HTTP call that got no response.
    pub(super) fn of_http_error(error: &super::http_client::ClientError) -> Exit {
        use super::http_client::ClientError as E;
        match error {
            E::InvalidUrl { .. } => Exit::Usage,
            E::Connect { .. } | E::Io { .. } => Exit::Unavailable,
            E::BadResponse { .. } | E::Tls { .. } => Exit::Error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Exit;
    use crate::engine::{EngineError, ErrorKind, TaskState};

    /// The exit an engine error gets is decided by its kind alone: every
    /// variant's `code()` (what the server sends) lands where its `kind()` says.
    #[test]
    fn every_engine_error_exits_as_its_kind_says() {
        let errors = [
            EngineError::invalid("priority", "bad"),
            EngineError::too_large("group", 200, 128),
            EngineError::TaskNotFound(1),
            EngineError::QueueNotFound("q".into()),
            EngineError::LeaseMismatch(1),
            EngineError::LeaseExpired(1),
            EngineError::NotLeased { id: 1, state: TaskState::Ready },
            EngineError::TaskFinished { id: 1, state: TaskState::Completed },
            EngineError::TaskNotDead { id: 1, state: TaskState::Ready },
            EngineError::TaskNotFinished { id: 1, state: TaskState::Ready },
            EngineError::QueueNotEmpty { queue: "q".into(), unfinished_count: 1 },
            EngineError::CapacityExceeded { what: "tasks", limit: 1 },
            EngineError::Unauthenticated { reason: "no".into() },
            EngineError::Forbidden { scope: "admin", on: "".into() },
        ];
        for error in errors {
            let expected = match error.kind() {
                ErrorKind::InvalidArgument | ErrorKind::TooLarge => Exit::Usage,
                ErrorKind::NotFound => Exit::NotFound,
                ErrorKind::Conflict => Exit::Conflict,
                ErrorKind::Unavailable => Exit::Unavailable,
                ErrorKind::Unauthenticated | ErrorKind::Forbidden => Exit::Auth,
            };
            assert_eq!(Exit::of_server_code(error.code(), None), expected, "{error:?}");
        }
        // The HTTP router's own codes, by status.
        assert_eq!(Exit::of_server_code("not_found", Some(404)), Exit::NotFound);
        assert_eq!(Exit::of_server_code("method_not_allowed", Some(405)), Exit::Error);
        assert_eq!(Exit::of_server_code("overloaded", Some(503)), Exit::Unavailable);
        assert_eq!(Exit::of_server_code("storage_failed", Some(500)), Exit::Error);
    }

    /// `tqx --help` and docs/cli.md list the same codes with the same words.
    #[test]
    fn the_exit_code_table_in_the_help_is_the_one_in_docs_cli_md() {
        let doc = include_str!("../../docs/cli.md");
        for (code, meaning) in super::HELP.lines().skip(1).filter_map(|line| {
            let line = line.trim_start();
            let (code, rest) = line.split_once("  ")?;
            code.parse::<u8>().ok().map(|code| (code, rest.split(':').next().unwrap_or(rest).to_string()))
        }) {
            let row = format!("| {code} | {meaning}");
            assert!(doc.contains(&row), "docs/cli.md lacks the row starting {row:?}");
        }
    }
}
