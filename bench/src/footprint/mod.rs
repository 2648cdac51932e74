//! `bench-footprint` (issue 7, "Footprint and scale"): what the server costs as
//! its work grows. Each measurement starts a fresh `tqx serve` (fresh data
//! directory, open-file limit raised), drives it with `tqx-bench` (`preload`,
//! `run`, `hold`) and reads its resident memory from `/proc/PID/status`:
//!
//! 1. RSS holding 0 and N ready tasks of 100 bytes, `memory` and `sync`
//!    → bytes per task beyond the payload;
//! 2. RSS with 0 and N idle connections, and N connections each sending one
//!    enqueue per second → bytes per connection, p99 of those enqueues;
//! 3. connection rate (`run --scenario storm`), and the time `hold` takes to
//!    open N connections at once;
//! 4. enqueue and cycle throughput and p99 against connections, and cycle
//!    against backlog;
//! 5. restart time after SIGKILL with N tasks in the store and the log.
//!
//! Code map: `plan` (the sizes of each scale), `measure` (the five
//! measurements), `server` (one `tqx serve`), `bench` (calls of `tqx-bench`),
//! `procfs` (RSS, memory, sizes), `record` (a line of `footprint.jsonl` and
//! the arithmetic), `markdown` and `plot` (`footprint.md` and its SVGs).
//! docs/bench-harness.md describes the command.

pub(crate) mod bench;
mod markdown;
mod measure;
mod plan;
mod plot;
mod procfs;
mod record;
mod server;

pub use markdown::render;
pub use measure::{run, Options};
pub use plan::{Plan, Scale};
pub use plot::{conn_plot, task_plot, CONN_PLOT, TASK_PLOT};
pub use procfs::{kb_field, rss_bytes};
pub use record::{bytes_per_conn, bytes_per_task, Axis, Machine, Record};
