//! A client for TaskQueueX over its binary protocol (`tqx serve --binary`,
//! default `127.0.0.1:7701`; the protocol is `tqx-wire`, specified in
//! `docs/wire.md`). The guide is `docs/client.md`.
//!
//! - **Pipelined.** One connection carries any number of calls at once: clones
//!   of a [`Client`] share it, each call waits for the reply with its request
//!   id (the server may answer out of order), and a writer task sends every
//!   queued request with one write.
//! - **Reconnecting.** When the connection drops, the next call reconnects with
//!   exponential backoff and full jitter ([`ClientOptions`]). Calls that were in
//!   flight fail with [`ClientError::ConnectionLost`]: the server may or may not
//!   have executed them. Calls that are safe to send twice are resent instead:
//!   `ping`, `list_queues`, `get_queue`, `get_task`, and `enqueue` /
//!   `enqueue_batch` when every task carries an idempotency key (the key makes
//!   the server return the task the first send created).
//! - **Typed.** One method per operation; server errors are
//!   [`ClientError::Server`] with the [`ErrorCode`] the HTTP API names the same
//!   way, and [`ClientError::is_retryable`] / [`ClientError::is_outcome_unknown`]
//!   say what to do next.
//! - **Async or blocking.** [`Client`] runs on the caller's tokio runtime;
//!   [`blocking::Client`] has the same methods and brings its own.
//! - **TLS** when [`ClientOptions::tls`] is set ([`ClientTls::from_pem_files`]:
//!   the CA that signed the server's certificate, and a client certificate for
//!   mutual TLS); a refused certificate is [`ClientError::Tls`].
//!
//! ```no_run
//! use bytes::Bytes;
//! use tqx_client::{Client, ClientOptions, TaskSpec};
//!
//! # async fn quickstart() -> Result<(), tqx_client::ClientError> {
//! let client = Client::connect("127.0.0.1:7701", ClientOptions::default()).await?;
//!
//! // An idempotency key makes the enqueue safe to repeat: if the connection
//! // drops before the reply, the client sends it again, and the server returns
//! // the task the first send created instead of adding a second one.
//! let task = TaskSpec {
//!     payload: Bytes::from_static(br#"{"to":"a@b.c"}"#),
//!     key: Some("welcome-mail-17".to_string()),
//!     ..TaskSpec::default()
//! };
//! let enqueued = client.enqueue("emails", task).await?;
//! println!("enqueued task {} ({:?}, created: {})", enqueued.id, enqueued.state, enqueued.created);
//!
//! // Lease up to one task, waiting up to 1 s for one to be ready.
//! let leased = client.dequeue(&["emails"], 1, None, 1_000).await?;
//! for task in leased {
//!     println!("leased task {} attempt {}: {}", task.id, task.attempt, String::from_utf8_lossy(&task.payload));
//!     let state = client.complete(task.id, task.lease, Some(Bytes::from_static(b"\"sent\""))).await?;
//!     println!("task {} is {:?}", task.id, state);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The blocking client is the same without `.await`:
//!
//! ```no_run
//! let client = tqx_client::blocking::Client::connect("127.0.0.1:7701", Default::default())?;
//! assert!(client.ping()?);
//! # Ok::<(), tqx_client::ClientError>(())
//! ```

mod client;
mod connection;
mod error;
mod options;

pub mod blocking;
pub mod tls;

pub use client::Client;
pub use error::ClientError;
pub use options::{
    ClientOptions, Token, CONNECT_TIMEOUT_MS_DEFAULT, RECONNECT_ATTEMPTS_MAX_DEFAULT,
    RECONNECT_BACKOFF_BASE_MS_DEFAULT, RECONNECT_BACKOFF_MAX_MS_DEFAULT, REPLY_BODY_BYTES_MAX_DEFAULT,
    REQUEST_TIMEOUT_MS_DEFAULT,
};
pub use tls::ClientTls;
/// The protocol crate, for what this one does not re-export.
pub use tqx_wire as wire;
pub use tqx_wire::{
    CompleteItem, CompleteOutcome, Dep, Discipline, Enqueued, ErrorCode, LeasedTask, QueueInfo, QueuePatch, TaskSpec,
    TaskState, TaskView,
};

/// Where `tqx serve --binary` listens by default.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7701";
