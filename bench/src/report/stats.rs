//! From the lines of a results file to one figure per cell: the median over
//! runs of each measured quantity, and ratios between systems.
//!
//! Medians, not means: a shared 2-core machine has outliers (another process
//! waking up, a page-cache flush), and the median of N alternated runs ignores
//! up to (N-1)/2 bad ones on either side.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{Cell, FsyncUs, Line, Meta, Row, Scenario, System};

/// The median of `values` (the mean of the two middle ones for an even count);
/// `None` for no values. NaNs sort last and count like any value.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        Some(sorted[mid])
    } else {
        Some((sorted[mid - 1] + sorted[mid]) / 2.0)
    }
}

/// `ours / theirs`, when both are known and `theirs` is positive.
pub fn ratio(ours: Option<f64>, theirs: Option<f64>) -> Option<f64> {
    match (ours, theirs) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

/// One cell's figures: each the median over the runs that measured it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    /// Runs that measured the cell (failed runs are not counted).
    pub runs: usize,
    pub ops_per_s: f64,
    pub tasks_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    /// Errors summed over the runs (a healthy run has none).
    pub errors: u64,
    /// Median offered rate of an open-loop cell.
    pub offered_rate: Option<f64>,
    /// Median CPU the load generator used, as a share of one core (its
    /// `client_cpu`; near 1.0 the client set the pace).
    pub client_cpu: Option<f64>,
    /// Median CPU time the server's process spent per op (per task in the
    /// batch scenario), in µs: its `server_cpu` over its throughput. On a
    /// machine the client shares, this compares servers even when the client
    /// sets the pace.
    pub server_us_per_op: Option<f64>,
}

impl Summary {
    /// The throughput compared across systems: tasks for a batch scenario
    /// (one request carries many), requests otherwise.
    pub fn throughput(&self, scenario: Scenario) -> f64 {
        if scenario.counts_tasks() {
            self.tasks_per_s
        } else {
            self.ops_per_s
        }
    }
}

/// Everything a results file holds, reduced to what the report shows.
#[derive(Clone, Debug, Default)]
pub struct Results {
    /// The first `meta` line.
    pub meta: Option<Meta>,
    /// `fdatasync` per run, back to back, in run order.
    pub fsync: Vec<FsyncUs>,
    /// `fdatasync` per run, paced like the idle latency cell's requests.
    pub fsync_paced: Vec<FsyncUs>,
    pub cells: BTreeMap<Cell, Summary>,
    /// Cells `tqx-bench` said it cannot do.
    pub unsupported: BTreeSet<Cell>,
    /// (run, cell, message) of every failure, in file order.
    pub failures: Vec<(u32, Option<Cell>, String)>,
    /// How long the measurement took, when it finished.
    pub elapsed_seconds: Option<f64>,
    /// The load average when it finished.
    pub load_average_end: Option<String>,
}

impl Results {
    /// Parses a JSON-lines results file; blank lines are skipped, and a line
    /// that does not parse is an error naming its number.
    pub fn parse_jsonl(text: &str) -> Result<Results, String> {
        let mut lines = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parsed: Line = serde_json::from_str(line).map_err(|e| format!("results line {}: {e}", index + 1))?;
            lines.push(parsed);
        }
        Ok(Results::from_lines(&lines))
    }

    pub fn from_lines(lines: &[Line]) -> Results {
        let mut results = Results::default();
        let mut measured: BTreeMap<Cell, Vec<&super::model::BenchOutput>> = BTreeMap::new();
        for line in lines {
            match line {
                Line::Meta(meta) => {
                    if results.meta.is_none() {
                        results.meta = Some(meta.clone());
                    }
                }
                Line::Fsync { fdatasync_us, interval_us: 0, .. } => results.fsync.push(*fdatasync_us),
                Line::Fsync { fdatasync_us, .. } => results.fsync_paced.push(*fdatasync_us),
                Line::Measured { cell, bench, .. } => measured.entry(*cell).or_default().push(bench),
                Line::Unsupported { cell, .. } => {
                    results.unsupported.insert(*cell);
                }
                Line::Failure { run, cell, message } => results.failures.push((*run, *cell, message.clone())),
                Line::Done { elapsed_seconds, load_average } => {
                    results.elapsed_seconds = Some(*elapsed_seconds);
                    results.load_average_end = Some(load_average.clone()).filter(|l| !l.is_empty());
                }
            }
        }
        for (cell, runs) in measured {
            let of = |f: &dyn Fn(&super::model::BenchOutput) -> f64| {
                median(&runs.iter().map(|b| f(b)).collect::<Vec<_>>()).unwrap_or(0.0)
            };
            let offered: Vec<f64> = runs.iter().filter_map(|b| b.offered_rate).collect();
            let client_cpu: Vec<f64> =
                runs.iter().filter_map(|b| b.extra.get("client_cpu").and_then(|v| v.as_f64())).collect();
            let server_us_per_op: Vec<f64> = runs
                .iter()
                .filter_map(|b| {
                    let cpu = b.extra.get("server_cpu").and_then(|v| v.as_f64())?;
                    let per_s = if cell.scenario.counts_tasks() { b.tasks_per_s? } else { b.ops_per_s };
                    (per_s > 0.0).then(|| cpu * 1e6 / per_s)
                })
                .collect();
            let summary = Summary {
                runs: runs.len(),
                ops_per_s: of(&|b| b.ops_per_s),
                tasks_per_s: of(&|b| b.tasks_per_s.unwrap_or(b.ops_per_s)),
                p50_us: of(&|b| b.latency_us.p50),
                p99_us: of(&|b| b.latency_us.p99),
                p999_us: of(&|b| b.latency_us.p999),
                max_us: of(&|b| b.latency_us.max),
                mean_us: of(&|b| b.latency_us.mean),
                errors: runs.iter().map(|b| b.errors).sum(),
                offered_rate: median(&offered),
                client_cpu: median(&client_cpu),
                server_us_per_op: median(&server_us_per_op),
            };
            results.cells.insert(cell, summary);
        }
        results
    }

    pub fn get(&self, cell: &Cell) -> Option<&Summary> {
        self.cells.get(cell)
    }

    /// Median `fdatasync` p50 over the runs, in µs (back to back).
    pub fn fsync_p50_us(&self) -> Option<f64> {
        median(&self.fsync.iter().map(|f| f.p50).collect::<Vec<_>>())
    }

    /// Median p50 of the paced `fdatasync` (the idle disk) over the runs, in µs.
    pub fn fsync_paced_p50_us(&self) -> Option<f64> {
        median(&self.fsync_paced.iter().map(|f| f.p50).collect::<Vec<_>>())
    }

    /// Every row of `scenario` that has a figure, a failure or an
    /// "unsupported", in order (durability, then parameters).
    pub fn rows(&self, scenario: Scenario) -> Vec<Row> {
        let failed = self.failures.iter().filter_map(|(_, cell, _)| cell.as_ref());
        let rows: BTreeSet<Row> = self
            .cells
            .keys()
            .chain(self.unsupported.iter())
            .chain(failed)
            .filter(|c| c.scenario == scenario)
            .map(|c| c.row())
            .collect();
        rows.into_iter().collect()
    }

    /// The systems that appear in `row`, in [`System::ALL`] order.
    pub fn systems(&self, row: &Row) -> Vec<System> {
        System::ALL.into_iter().filter(|s| self.status(&row.cell(*s)) != CellStatus::Absent).collect()
    }

    /// The first cell matching `pred` with a figure.
    pub fn find(&self, pred: impl Fn(&Cell) -> bool) -> Option<(&Cell, &Summary)> {
        self.cells.iter().find(|(cell, _)| pred(cell))
    }

    pub fn status(&self, cell: &Cell) -> CellStatus {
        if self.cells.contains_key(cell) {
            CellStatus::Measured
        } else if self.unsupported.contains(cell) {
            CellStatus::Unsupported
        } else if self.failures.iter().any(|(_, c, _)| c.as_ref() == Some(cell)) {
            CellStatus::Failed
        } else {
            CellStatus::Absent
        }
    }
}

/// What TLS costs one system in one row: its TLS row against the plain twin
/// measured just before it in the same run ([`Results::tls_cost`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TlsCost {
    pub plain: Option<Summary>,
    pub tls: Option<Summary>,
    /// Throughput over TLS ÷ plain (below 1: TLS is slower).
    pub throughput: Option<f64>,
    /// Server CPU per op over TLS ÷ plain (above 1: TLS costs the server more).
    pub server_cpu: Option<f64>,
}

impl Results {
    /// The cost of TLS for `system` in `row` (a TLS row or its plain twin);
    /// for the row with tokens on, of TLS and tokens together (against the
    /// same plain twin, without tokens).
    pub fn tls_cost(&self, row: &Row, system: System) -> TlsCost {
        let plain = self.get(&Row { tls: false, tokens: false, ..*row }.cell(system)).copied();
        let tls = self.get(&Row { tls: true, ..*row }.cell(system)).copied();
        let scenario = row.scenario;
        TlsCost {
            plain,
            tls,
            throughput: ratio(tls.map(|s| s.throughput(scenario)), plain.map(|s| s.throughput(scenario))),
            server_cpu: ratio(tls.and_then(|s| s.server_us_per_op), plain.and_then(|s| s.server_us_per_op)),
        }
    }

    /// Every TLS row with a figure, a failure or an "unsupported", in order.
    pub fn tls_rows(&self) -> Vec<Row> {
        Scenario::ALL.into_iter().flat_map(|s| self.rows(s)).filter(|r| r.tls).collect()
    }
}

/// What the results say about one cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellStatus {
    Measured,
    Unsupported,
    /// Every run of it failed.
    Failed,
    /// Not part of the run.
    Absent,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::{BenchOutput, Durability, LatencyUs};

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        // One wild outlier does not move it.
        assert_eq!(median(&[100.0, 101.0, 99.0, 1e9, 0.0]), Some(100.0));
    }

    #[test]
    fn ratio_needs_both_and_a_positive_denominator() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(2.0)), None);
        assert_eq!(ratio(Some(1.0), None), None);
        assert_eq!(ratio(Some(f64::NAN), Some(1.0)), None);
    }

    fn cell(system: System) -> Cell {
        Cell {
            scenario: Scenario::Enqueue,
            durability: Durability::Sync,
            connections: 50,
            pipeline: 1,
            batch: None,
            load: None,
            idle: None,
            tls: false,
            tokens: false,
            system,
        }
    }

    fn bench(ops_per_s: f64, p99: f64) -> BenchOutput {
        BenchOutput { ops_per_s, latency_us: LatencyUs { p99, ..LatencyUs::default() }, ..BenchOutput::default() }
    }

    #[test]
    fn summaries_are_medians_per_cell_and_failures_do_not_count() {
        let lines = vec![
            Line::Measured { run: 1, cell: cell(System::TqxBinary), bench: bench(100.0, 10.0) },
            Line::Measured { run: 1, cell: cell(System::Redis), bench: bench(50.0, 30.0) },
            Line::Measured { run: 2, cell: cell(System::TqxBinary), bench: bench(300.0, 20.0) },
            Line::Failure { run: 2, cell: Some(cell(System::Redis)), message: "boom".into() },
            Line::Measured { run: 3, cell: cell(System::TqxBinary), bench: bench(200.0, 90.0) },
            Line::Unsupported { run: 1, cell: cell(System::Beanstalkd) },
        ];
        let results = Results::from_lines(&lines);
        let ours = results.get(&cell(System::TqxBinary)).unwrap();
        assert_eq!((ours.runs, ours.ops_per_s, ours.p99_us), (3, 200.0, 20.0));
        // tasks_per_s falls back to ops_per_s when the generator leaves it out.
        assert_eq!(ours.tasks_per_s, 200.0);
        let redis = results.get(&cell(System::Redis)).unwrap();
        assert_eq!((redis.runs, redis.ops_per_s), (1, 50.0));
        assert_eq!(results.status(&cell(System::Beanstalkd)), CellStatus::Unsupported);
        assert_eq!(results.status(&cell(System::RedisReliable)), CellStatus::Absent);
        let row = cell(System::Redis).row();
        assert_eq!(results.rows(Scenario::Enqueue), vec![row]);
        assert_eq!(results.systems(&row), vec![System::TqxBinary, System::Redis, System::Beanstalkd]);
        assert_eq!(results.failures.len(), 1);
    }

    #[test]
    fn every_line_kind_round_trips_through_json() {
        let mut output = bench(1.5, 2.0);
        output.extra.insert("future_field".into(), serde_json::json!({"x": 1}));
        let lines = vec![
            Line::Meta(Meta { date: "d".into(), machine: vec![("cores".into(), "2".into())], ..Meta::default() }),
            Line::Fsync { run: 1, fdatasync_us: FsyncUs { p50: 1.0, p99: 2.0, mean: 1.5 }, interval_us: 0 },
            Line::Measured { run: 1, cell: cell(System::TqxHttp), bench: output },
            Line::Unsupported { run: 1, cell: cell(System::Beanstalkd) },
            Line::Failure { run: 1, cell: None, message: "m".into() },
            Line::Done { elapsed_seconds: 3.0, load_average: "0.50 0.40 0.30".into() },
        ];
        for line in lines {
            let json = line.to_json();
            assert!(!json.contains('\n'));
            let back: Line = serde_json::from_str(&json).unwrap();
            assert_eq!(back, line, "{json}");
        }
    }

    #[test]
    fn results_without_tls_read_as_plain_and_tls_cells_round_trip() {
        let old = r#"{"kind":"unsupported","run":1,"cell":{"scenario":"enqueue","durability":"sync","connections":50,"pipeline":1,"system":"redis"}}"#;
        let results = Results::parse_jsonl(old).unwrap();
        assert!(results.unsupported.contains(&cell(System::Redis)), "no `tls` field: plain text");
        let tls = Cell { tls: true, ..cell(System::Redis) };
        let json = Line::Unsupported { run: 1, cell: tls }.to_json();
        assert!(json.contains(r#""tls":true"#), "{json}");
        assert!(!Line::Unsupported { run: 1, cell: cell(System::Redis) }.to_json().contains("tls"));
        assert_eq!(serde_json::from_str::<Line>(&json).unwrap(), Line::Unsupported { run: 1, cell: tls });
    }

    #[test]
    fn tls_cost_divides_the_tls_row_by_its_plain_twin() {
        let with_cpu = |ops_per_s: f64, cpu: f64| {
            let mut b = bench(ops_per_s, 1.0);
            b.extra.insert("server_cpu".into(), serde_json::json!(cpu));
            b
        };
        let plain = Cell { durability: Durability::Memory, ..cell(System::TqxBinary) };
        let tls = Cell { tls: true, ..plain };
        let results = Results::from_lines(&[
            // 100k/s at 0.5 cores: 5 µs/op; over TLS 80k/s at 0.6 cores: 7.5 µs/op.
            Line::Measured { run: 1, cell: plain, bench: with_cpu(100_000.0, 0.5) },
            Line::Measured { run: 1, cell: tls, bench: with_cpu(80_000.0, 0.6) },
        ]);
        let cost = results.tls_cost(&tls.row(), System::TqxBinary);
        assert_eq!(cost.throughput, Some(0.8));
        assert!((cost.server_cpu.unwrap() - 1.5).abs() < 1e-9, "{cost:?}");
        assert_eq!(results.tls_cost(&plain.row(), System::TqxBinary), cost, "either row of the pair");
        assert_eq!(results.tls_cost(&tls.row(), System::Redis).throughput, None);
        assert_eq!(results.tls_rows(), vec![tls.row()]);
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number() {
        let err = Results::parse_jsonl("\n{\"kind\":\"done\",\"elapsed_seconds\":1}\n{oops\n").unwrap_err();
        assert!(err.starts_with("results line 3:"), "{err}");
    }
}
