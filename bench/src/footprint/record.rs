//! One line of `footprint.jsonl`: a measurement, the machine, or a failure;
//! and the arithmetic that turns resident sizes into costs.

use serde::Serialize;

/// What the figures depend on; the first line of `footprint.jsonl`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub kernel: String,
    pub memory_bytes: u64,
    /// `git describe`-like: the commit, with ` (with uncommitted changes)` when dirty.
    pub git_commit: String,
    pub scale: String,
    pub command: String,
    pub started_utc: String,
    /// The open-file limit the servers were started with.
    pub nofile_limit: u64,
}

/// Which axis a scaling point varies.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Axis {
    Connections,
    Backlog,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Machine(Machine),
    /// Measurement 1: RSS holding `tasks` ready tasks.
    TaskRss {
        durability: String,
        tasks: u64,
        payload_bytes: u64,
        /// RSS once the server has settled ([`super::plan::Plan::settle_seconds`]
        /// after the preload: its checkpoint written, freed pages returned).
        rss_bytes: u64,
        /// RSS of a fresh server of the same durability with no task.
        rss_empty_bytes: u64,
        /// From `rss_bytes`.
        bytes_per_task: Option<f64>,
        /// RSS half a second after the preload (a `sync` checkpoint may hold
        /// its copy of the rows then).
        rss_loaded_bytes: u64,
        /// The server's high-water mark (`VmHWM`) at the settled reading.
        rss_peak_bytes: u64,
        preload_seconds: f64,
    },
    /// Measurement 2: RSS with `connections` open (idle, or sending).
    ConnRss {
        connections: u64,
        /// Enqueues per second per connection; `None`: idle.
        rate_per_conn: Option<f64>,
        rss_bytes: u64,
        rss_empty_bytes: u64,
        bytes_per_conn: Option<f64>,
        opened: u64,
        /// Time to open them all at once (measurement 3's second figure).
        open_seconds: f64,
        ops: u64,
        errors: u64,
        p99_us: Option<f64>,
    },
    /// Measurement 3: `tqx-bench run --scenario storm`.
    Storm {
        loops: usize,
        seconds: f64,
        conns_per_s: f64,
        p99_us: f64,
        errors: u64,
    },
    /// Measurement 4: one point of a scaling curve.
    Scaling {
        axis: Axis,
        scenario: String,
        connections: usize,
        backlog: u64,
        ops_per_s: f64,
        p50_us: f64,
        p99_us: f64,
        errors: u64,
        client_cpu: f64,
    },
    /// Measurement 5: restart after SIGKILL with `tasks` in the store and log.
    Recovery {
        tasks: u64,
        data_bytes: u64,
        /// Of `data_bytes`, the write-ahead log's segments at the kill.
        wal_bytes: u64,
        /// Log records the restart replayed (from its `recovered` line).
        wal_records_replayed: Option<u64>,
        /// From spawn to the `listening` lines.
        listening_seconds: f64,
        /// From spawn to `GET /healthz` answering 200.
        ready_seconds: f64,
        rss_bytes: u64,
    },
    /// A measurement that could not be made; the others go on.
    Failure {
        measurement: String,
        error: String,
    },
}

/// Bytes each of `tasks` tasks costs beyond its payload: the growth of the
/// resident size over the empty server's, per task, minus the payload.
pub fn bytes_per_task(rss_bytes: u64, rss_empty_bytes: u64, tasks: u64, payload_bytes: u64) -> Option<f64> {
    if tasks == 0 {
        return None;
    }
    Some((rss_bytes as f64 - rss_empty_bytes as f64) / tasks as f64 - payload_bytes as f64)
}

/// Bytes each of `connections` connections costs: the growth of the resident
/// size over the server with none, per connection.
pub fn bytes_per_conn(rss_bytes: u64, rss_empty_bytes: u64, connections: u64) -> Option<f64> {
    if connections == 0 {
        return None;
    }
    Some((rss_bytes as f64 - rss_empty_bytes as f64) / connections as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_per_task_is_the_growth_per_task_minus_the_payload() {
        // 10 MiB empty, 10 MiB + 1M × 228 bytes full: 128 bytes beyond 100.
        let empty = 10 << 20;
        assert_eq!(bytes_per_task(empty + 228_000_000, empty, 1_000_000, 100), Some(128.0));
        assert_eq!(bytes_per_task(empty, empty, 0, 100), None);
        // A server that shrank (memory returned to the OS) gives a negative
        // figure, not a wrapped one.
        assert_eq!(bytes_per_task(empty - 1_000, empty, 10, 100), Some(-200.0));
    }

    #[test]
    fn cost_per_connection() {
        assert_eq!(bytes_per_conn(30 << 20, 20 << 20, 1_024), Some(10_240.0));
        assert_eq!(bytes_per_conn(30 << 20, 20 << 20, 0), None);
    }

    #[test]
    fn records_are_tagged_json() {
        let line = serde_json::to_string(&Record::Storm {
            loops: 50,
            seconds: 1.0,
            conns_per_s: 12_000.5,
            p99_us: 800.0,
            errors: 0,
        })
        .unwrap();
        assert_eq!(
            line,
            r#"{"kind":"storm","loops":50,"seconds":1.0,"conns_per_s":12000.5,"p99_us":800.0,"errors":0}"#
        );
    }
}
