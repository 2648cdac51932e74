//! The sizes each scale measures.

/// `small` finishes in under two minutes (development, CI); `full` is the
/// issue's numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Small,
    Full,
}

impl Scale {
    pub fn parse(text: &str) -> Option<Scale> {
        match text {
            "small" => Some(Scale::Small),
            "full" => Some(Scale::Full),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Scale::Small => "small",
            Scale::Full => "full",
        }
    }
}

/// What one run measures.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Ready tasks held (measurement 1), besides 0.
    pub task_counts: Vec<u64>,
    /// Payload of every task, in bytes.
    pub payload_bytes: u64,
    /// Seconds between the end of a preload and the settled RSS reading: past
    /// the next checkpoint (every 5 s) and jemalloc's return of freed pages
    /// (10 s decay).
    pub settle_seconds: f64,
    /// Idle connections held (measurement 2), besides 0.
    pub idle_connections: Vec<u64>,
    /// Connections each sending [`Plan::rate_per_conn`] enqueues/s.
    pub sending_connections: u64,
    pub rate_per_conn: f64,
    /// Seconds an idle hold lasts after all connections are open.
    pub idle_hold_seconds: f64,
    /// Seconds a sending hold lasts; RSS is read halfway through.
    pub sending_hold_seconds: f64,
    /// Concurrent connect loops of the storm (measurement 3).
    pub storm_loops: usize,
    /// Connection counts of the scaling curve (measurement 4).
    pub scaling_connections: Vec<usize>,
    /// Backlogs preloaded before a cycle run (measurement 4).
    pub backlogs: Vec<u64>,
    /// Connections of the cycle runs against backlog.
    pub backlog_connections: usize,
    /// Tasks in the store at the restart (measurement 5).
    pub recovery_tasks: Vec<u64>,
    /// Measured seconds of each `tqx-bench run`, and the warm-up before.
    pub run_seconds: f64,
    pub warmup_seconds: f64,
}

impl Plan {
    pub fn for_scale(scale: Scale) -> Plan {
        match scale {
            Scale::Small => Plan {
                task_counts: vec![10_000, 50_000, 100_000],
                payload_bytes: 100,
                settle_seconds: 2.0,
                idle_connections: vec![100, 1_000],
                sending_connections: 1_000,
                rate_per_conn: 1.0,
                idle_hold_seconds: 1.0,
                sending_hold_seconds: 3.0,
                storm_loops: 50,
                scaling_connections: vec![1, 16, 100, 1_000],
                backlogs: vec![1_000, 10_000, 100_000],
                backlog_connections: 16,
                recovery_tasks: vec![50_000, 100_000],
                run_seconds: 1.0,
                warmup_seconds: 0.2,
            },
            Scale::Full => Plan {
                task_counts: vec![1_000_000, 5_000_000, 10_000_000],
                payload_bytes: 100,
                settle_seconds: 20.0,
                idle_connections: vec![1_000, 10_000],
                sending_connections: 10_000,
                rate_per_conn: 1.0,
                idle_hold_seconds: 5.0,
                sending_hold_seconds: 20.0,
                storm_loops: 50,
                scaling_connections: vec![1, 16, 64, 256, 1_024, 10_000],
                backlogs: vec![1_000, 100_000, 1_000_000, 10_000_000],
                backlog_connections: 16,
                recovery_tasks: vec![1_000_000, 10_000_000],
                run_seconds: 5.0,
                warmup_seconds: 1.0,
            },
        }
    }
}
