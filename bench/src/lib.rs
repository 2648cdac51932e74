//! TaskQueueX benchmarks.
//!
//! `benches/engine.rs` holds the engine micro-benchmarks (criterion), run with
//! `cargo bench -p tqx-bench --bench engine`. The network load generator that
//! compares TaskQueueX with Redis and beanstalkd arrives with the benchmark issue.
