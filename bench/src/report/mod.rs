//! The benchmark harness's orchestration and report (`bench/run`,
//! `bench-report`, docs/benchmarks.md).
//!
//! `bench/run` builds the binaries and installs the peers, then
//! `bench-report run` measures (one results file of JSON lines, [`model`]) and
//! `bench-report render` turns the results into the report and its plots. The
//! load itself comes from `tqx-bench run`, one process per measurement, whose
//! one-line JSON output is the contract between the two.
//!
//! - [`model`]: systems, durability levels, scenarios, cells, results lines.
//! - [`plan`]: which cells a run measures, in which (alternating) order.
//! - [`run`]: starting servers with matched durability, running `tqx-bench`.
//! - [`stats`]: medians over runs, ratios.
//! - [`targets`]: the goals and the design document's rows, checked.
//! - [`markdown`], [`plot`]: the report and its SVG plots.

pub mod markdown;
pub mod model;
pub mod plan;
pub mod plot;
pub mod run;
pub mod stats;
pub mod targets;
