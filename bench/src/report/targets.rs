//! The issue's goals and the design document's figures, checked against a
//! run's medians. Goals, not test assertions: the report says met or not, and
//! nothing fails when one is missed.

use super::model::{Cell, Durability, Load, Scenario, System};
use super::plan::{BATCH_TASKS, CONNECTIONS, IDLE_CONNECTIONS, PIPELINE_DEEP};
use super::stats::{ratio, Results, Summary};

/// Whether a goal is met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Met,
    NotMet,
    /// A figure it needs was not measured (a `--only` or `--quick` run, or a failure).
    Unknown,
}

impl Verdict {
    pub fn symbol(self) -> &'static str {
        match self {
            Verdict::Met => "✅ met",
            Verdict::NotMet => "❌ not met",
            Verdict::Unknown => "— not measured",
        }
    }

    fn of(ok: Option<bool>) -> Verdict {
        match ok {
            Some(true) => Verdict::Met,
            Some(false) => Verdict::NotMet,
            None => Verdict::Unknown,
        }
    }
}

/// One line of a goals table.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub goal: String,
    pub measured: String,
    pub verdict: Verdict,
}

fn cell(scenario: Scenario, durability: Durability, system: System) -> Cell {
    Cell {
        scenario,
        durability,
        connections: CONNECTIONS,
        pipeline: 1,
        batch: if scenario == Scenario::Batch { Some(BATCH_TASKS) } else { None },
        load: None,
        idle: None,
        tls: false,
        tokens: false,
        system,
    }
}

/// `ours ≥ factor × theirs` on the scenario's throughput.
fn ratio_check(results: &Results, goal: String, ours: Cell, theirs: Cell, factor: f64) -> Check {
    let scenario = ours.scenario;
    let a = results.get(&ours).map(|s| s.throughput(scenario));
    let b = results.get(&theirs).map(|s| s.throughput(scenario));
    let r = ratio(a, b);
    let measured = match (r, a, b) {
        (Some(r), Some(a), Some(b)) => format!("{} ({} vs {})", fmt_ratio(r), fmt_rate(a), fmt_rate(b)),
        _ => "—".to_string(),
    };
    Check { goal, measured, verdict: Verdict::of(r.map(|r| r >= factor)) }
}

/// The issue's targets, in its order.
pub fn targets(results: &Results) -> Vec<Check> {
    use Durability::*;
    use System::*;
    let mut checks = Vec::new();
    for (durability, factor, peer) in
        [(Sync, 1.5, "Redis `appendfsync always`"), (Memory, 1.2, "Redis without persistence")]
    {
        for pipeline in [1, PIPELINE_DEEP] {
            let depth = if pipeline == 1 { "unpipelined".to_string() } else { format!("{pipeline}-deep pipelines") };
            let ours = Cell { pipeline, ..cell(Scenario::Enqueue, durability, TqxBinary) };
            checks.push(ratio_check(
                results,
                format!("`{durability}` enqueue, {depth}: ≥ {factor}× {peer}"),
                ours,
                Cell { system: Redis, ..ours },
                factor,
            ));
        }
    }
    for durability in Durability::ALL {
        let ours = cell(Scenario::Cycle, durability, TqxBinary);
        checks.push(ratio_check(
            results,
            format!("full cycle, `{durability}`: ≥ 1.5× Redis's reliable pattern"),
            ours,
            Cell { system: RedisReliable, ..ours },
            1.5,
        ));
        checks.push(ratio_check(
            results,
            format!("full cycle, `{durability}`: ≥ 3× beanstalkd"),
            ours,
            Cell { system: Beanstalkd, ..ours },
            3.0,
        ));
    }
    let batch = results.get(&cell(Scenario::Batch, Sync, TqxBinary)).map(|s| s.tasks_per_s);
    checks.push(Check {
        goal: "batch enqueue in `sync` mode: ≥ 2 million tasks/s".into(),
        measured: batch.map(|b| format!("{} tasks/s", fmt_rate(b))).unwrap_or_else(|| "—".into()),
        verdict: Verdict::of(batch.map(|b| b >= 2_000_000.0)),
    });
    let at_half = Cell { load: Some(Load::Percent(50)), ..cell(Scenario::Latency, Memory, TqxBinary) };
    let p99 = results.get(&at_half).map(|s| s.p99_us);
    checks.push(Check {
        goal: "p99 of a `memory` enqueue at 50 % load: ≤ 100 µs".into(),
        measured: p99.map(|p| format!("{} µs", fmt_us(p))).unwrap_or_else(|| "—".into()),
        verdict: Verdict::of(p99.map(|p| p <= 100.0)),
    });
    let idle = Cell { connections: 1, load: Some(Load::Idle), ..cell(Scenario::Latency, Sync, TqxBinary) };
    let p50 = results.get(&idle).map(|s| s.p50_us);
    // The reference is the disk's sync at the idle cell's pacing (1 ms apart):
    // an idle disk syncs several times slower than a busy one on this machine.
    // Results without a paced measurement fall back to back-to-back syncs.
    let (fsync, which) = match results.fsync_paced_p50_us() {
        Some(paced) => (Some(paced), "paced 1 ms apart like the requests"),
        None => (results.fsync_p50_us(), "back to back"),
    };
    let r = ratio(p50, fsync);
    checks.push(Check {
        goal: "p50 of a `sync` enqueue on an idle server: ≤ 1.5× the machine's `fdatasync`".into(),
        measured: match (r, p50, fsync) {
            (Some(r), Some(p), Some(f)) => {
                format!("{} µs = {} of `fdatasync` p50 {} µs ({which})", fmt_us(p), fmt_ratio(r), fmt_us(f))
            }
            _ => "—".into(),
        },
        verdict: Verdict::of(r.map(|r| r <= 1.5)),
    });
    let design = design_rows(results);
    let beaten = design.iter().filter(|c| c.verdict == Verdict::Met).count();
    let known = design.iter().filter(|c| c.verdict != Verdict::Unknown).count();
    checks.push(Check {
        goal: "every row of the design document's tables beaten on 2 cores".into(),
        measured: format!("{beaten} of {} rows beaten ({} measured)", design.len(), known),
        verdict: if known < design.len() { Verdict::Unknown } else { Verdict::of(Some(beaten == design.len())) },
    });
    checks
}

/// Issue 17's targets, in its table's order: for each, our figure, the
/// peer's, the ratio and the verdict, all from the same run. Throughputs and
/// CPU per op are the closed-loop cells; "Redis" in the full cycle is its
/// reliable pattern (LMOVE + LREM: a task survives its consumer, like a
/// lease). The connection rate is the storm scenario's; the p99 with idle
/// connections open is the `memory` latency cell that holds
/// [`IDLE_CONNECTIONS`] during the measurement.
pub fn issue17_targets(results: &Results) -> Vec<Check> {
    use Durability::*;
    use System::*;
    let mut checks = Vec::new();
    let rows = |scenario: Scenario| -> Vec<Cell> {
        [1, PIPELINE_DEEP].into_iter().map(|pipeline| Cell { pipeline, ..cell(scenario, Sync, TqxBinary) }).collect()
    };
    let depth = |c: &Cell| if c.pipeline == 1 { "unpipelined".to_string() } else { format!("×{}", c.pipeline) };
    let redis_for = |scenario: Scenario| if scenario == Scenario::Cycle { RedisReliable } else { Redis };
    for durability in [Memory, Sync] {
        for scenario in [Scenario::Enqueue, Scenario::Cycle] {
            for row in rows(scenario) {
                let ours = Cell { durability, ..row };
                let theirs = Cell { system: redis_for(scenario), ..ours };
                let a = results.get(&ours).and_then(|s| s.server_us_per_op);
                let b = results.get(&theirs).and_then(|s| s.server_us_per_op);
                let r = ratio(a, b);
                checks.push(Check {
                    goal: format!(
                        "server CPU per op, {scenario} {}, `{durability}`: ≤ 0.7× `{}`",
                        depth(&ours),
                        theirs.system
                    ),
                    measured: match (r, a, b) {
                        (Some(r), Some(a), Some(b)) => format!("{} ({a:.2} vs {b:.2} µs/op)", fmt_ratio(r)),
                        _ => "—".into(),
                    },
                    verdict: Verdict::of(r.map(|r| r <= 0.7)),
                });
            }
        }
    }
    for (durability, factor, peer) in
        [(Memory, 1.3, "Redis without persistence"), (Sync, 1.5, "Redis `appendfsync always`")]
    {
        for scenario in [Scenario::Enqueue, Scenario::Cycle] {
            for row in rows(scenario) {
                let ours = Cell { durability, ..row };
                let theirs = Cell { system: redis_for(scenario), ..ours };
                let name = if scenario == Scenario::Cycle { format!("{peer} (reliable pattern)") } else { peer.into() };
                checks.push(ratio_check(
                    results,
                    format!("throughput, {scenario} {}, `{durability}`: ≥ {factor}× {name}", depth(&ours)),
                    ours,
                    theirs,
                    factor,
                ));
            }
        }
    }
    for (peer, factor, what) in
        [(RabbitMq, 3.0, "RabbitMQ quorum queue with confirms"), (Nats, 2.0, "NATS JetStream (own class)")]
    {
        for scenario in [Scenario::Enqueue, Scenario::Cycle] {
            for ours in rows(scenario) {
                checks.push(ratio_check(
                    results,
                    format!("durable {scenario} {} (`sync`): ≥ {factor}× {what}", depth(&ours)),
                    ours,
                    Cell { system: peer, ..ours },
                    factor,
                ));
            }
        }
    }
    let idle = Cell { connections: 1, load: Some(Load::Idle), ..cell(Scenario::Latency, Sync, TqxBinary) };
    let p50 = results.get(&idle).map(|s| s.p50_us);
    let paced = results.fsync_paced_p50_us();
    let r = ratio(p50, paced);
    checks.push(Check {
        goal: "idle `sync` enqueue p50: ≤ 1.3× the disk's paced `fdatasync` in the same run".into(),
        measured: match (r, p50, paced) {
            (Some(r), Some(p), Some(f)) => format!("{} ({} µs vs {} µs)", fmt_ratio(r), fmt_us(p), fmt_us(f)),
            _ => "—".into(),
        },
        verdict: Verdict::of(r.map(|r| r <= 1.3)),
    });
    let apart = results
        .meta
        .as_ref()
        .and_then(|m| m.machine.iter().find(|(what, _)| what == "placement"))
        .is_some_and(|(_, how)| how.starts_with("pinned apart"));
    // The latency scenario's 50 % cell, or the same measurement made as the
    // unpipelined enqueue row's open-loop twin (a run without `latency`).
    let half = Cell { load: Some(Load::Percent(50)), ..cell(Scenario::Latency, Memory, TqxBinary) };
    let twin = Cell { scenario: Scenario::Enqueue, ..half };
    let p99 = results.get(&half).or_else(|| results.get(&twin)).map(|s| s.p99_us);
    checks.push(Check {
        goal: "`memory` enqueue p99 at 50 % of peak, server and client pinned apart: ≤ 150 µs".into(),
        measured: match p99 {
            Some(p) if apart => format!("{} µs", fmt_us(p)),
            Some(p) => format!("{} µs, but this run was not pinned apart", fmt_us(p)),
            None => "—".into(),
        },
        verdict: if apart { Verdict::of(p99.map(|p| p <= 150.0)) } else { Verdict::Unknown },
    });
    let crowded = Cell { idle: Some(IDLE_CONNECTIONS), ..half };
    let p99 = |system: System| results.get(&Cell { system, ..crowded }).map(|s| s.p99_us);
    checks.push(Check {
        goal: format!(
            "`memory` enqueue p99 at 50 % of peak with {} idle connections open: ≤ 1 ms",
            crate::shared::thousands(u64::from(IDLE_CONNECTIONS))
        ),
        measured: beside_redis(p99(TqxBinary), p99(Redis), |p| format!("{} µs", fmt_us(p))),
        verdict: Verdict::of(p99(TqxBinary).map(|p| p <= 1_000.0)),
    });
    let batch = results.get(&cell(Scenario::Batch, Sync, TqxBinary)).map(|s| s.tasks_per_s);
    checks.push(Check {
        goal: "batch enqueue with fsync (`sync`, 100 per batch): ≥ 2M tasks/s".into(),
        measured: batch.map(|b| format!("{} tasks/s", fmt_rate(b))).unwrap_or_else(|| "—".into()),
        verdict: Verdict::of(batch.map(|b| b >= 2_000_000.0)),
    });
    // The storm: each op is a new connection (connect, hello + enqueue,
    // reply, close), 50 at a time, in `memory` mode.
    let storm = |system: System| results.get(&cell(Scenario::Storm, Memory, system)).map(|s| s.ops_per_s);
    checks.push(Check {
        goal: "new connections (storm, `memory`): ≥ 20,000/s".into(),
        measured: beside_redis(storm(TqxBinary), storm(Redis), |r| format!("{}/s", fmt_rate(r))),
        verdict: Verdict::of(storm(TqxBinary).map(|s| s >= 20_000.0)),
    });
    checks
}

/// Issue 18's benchmark goal: TLS costs us no more than it costs Redis, as
/// the ratio of each system's TLS row to its plain twin in the same run. The
/// verdict is on the server's CPU per op (what the encryption costs the
/// server, whoever sets the pace); the throughput ratios are shown beside it.
/// One line per TLS row of the plan: the `memory` enqueue and full cycle,
/// unpipelined and ×16, `tqx-binary` against `redis`.
pub fn issue18_targets(results: &Results) -> Vec<Check> {
    let mut checks = Vec::new();
    for scenario in [Scenario::Enqueue, Scenario::Cycle] {
        for pipeline in [1, PIPELINE_DEEP] {
            let row = Cell { pipeline, tls: true, ..cell(scenario, Durability::Memory, System::TqxBinary) }.row();
            let ours = results.tls_cost(&row, System::TqxBinary);
            let redis = results.tls_cost(&row, System::Redis);
            let depth = if pipeline == 1 { "unpipelined".to_string() } else { format!("×{pipeline}") };
            let show = |r: Option<f64>| r.map(fmt_ratio).unwrap_or_else(|| "—".into());
            checks.push(Check {
                goal: format!(
                    "TLS costs `tqx-binary` no more than `redis`: {scenario} {depth}, `memory` (server CPU per op, \
                     TLS ÷ plain)"
                ),
                measured: match (ours.server_cpu, redis.server_cpu) {
                    (Some(a), Some(b)) => format!(
                        "{} vs {} (throughput TLS ÷ plain: {} vs {})",
                        fmt_ratio(a),
                        fmt_ratio(b),
                        show(ours.throughput),
                        show(redis.throughput)
                    ),
                    _ => "—".into(),
                },
                verdict: match (ours.server_cpu, redis.server_cpu) {
                    (Some(a), Some(b)) => Verdict::of(Some(a <= b)),
                    _ => Verdict::Unknown,
                },
            });
        }
    }
    checks
}

/// Our figure with Redis's in brackets (`—` when ours is missing).
fn beside_redis(ours: Option<f64>, redis: Option<f64>, show: impl Fn(f64) -> String) -> String {
    match ours {
        Some(ours) => format!("{}{}", show(ours), redis.map(|r| format!(" (`redis` {})", show(r))).unwrap_or_default()),
        None => "—".into(),
    }
}

/// The design document's claims (8 cores) against TaskQueueX's binary protocol
/// in `sync` mode here (status lookups: `memory`, the only mode they run in).
/// Throughputs are the closed-loop peaks ("queue operations" are the full
/// cycle's ops: completed tasks, each a dequeue and a complete); "average latency" is the mean
/// latency of the same closed-loop run (50 connections at full speed: the
/// latency a saturated server gives), except for enqueue, where the open-loop
/// run at 50 % of the peak is the fairer reading.
pub fn design_rows(results: &Results) -> Vec<Check> {
    use Durability::Sync;
    use System::TqxBinary;
    let at_least = |goal: &str, figure: Option<f64>, target: f64, unit: &str, how: &str| Check {
        goal: goal.to_string(),
        measured: figure.map(|f| format!("{} {unit} ({how})", fmt_rate(f))).unwrap_or_else(|| "—".into()),
        verdict: Verdict::of(figure.map(|f| f >= target)),
    };
    let at_most = |goal: &str, figure: Option<f64>, target_us: f64, how: &str| Check {
        goal: goal.to_string(),
        measured: figure.map(|f| format!("{} ms ({how})", fmt_ms(f))).unwrap_or_else(|| "—".into()),
        verdict: Verdict::of(figure.map(|f| f <= target_us)),
    };
    let get = |c: Cell| -> Option<Summary> { results.get(&c).copied() };
    let enqueue = get(cell(Scenario::Enqueue, Sync, TqxBinary));
    let batch = get(cell(Scenario::Batch, Sync, TqxBinary));
    let cycle = get(cell(Scenario::Cycle, Sync, TqxBinary));
    let storm = get(cell(Scenario::Storm, Sync, TqxBinary));
    // Status lookups run in `memory` mode only (reads write nothing).
    let status = get(cell(Scenario::Status, Durability::Memory, TqxBinary));
    let deps = get(cell(Scenario::Deps, Sync, TqxBinary));
    let half = get(Cell { load: Some(Load::Percent(50)), ..cell(Scenario::Latency, Sync, TqxBinary) });
    vec![
        at_least("enqueue: 50k/s", enqueue.map(|s| s.ops_per_s), 50_000.0, "enqueues/s", "scenario 1, `sync`"),
        at_least(
            "batch enqueue: 120k tasks/s",
            batch.map(|s| s.tasks_per_s),
            120_000.0,
            "tasks/s",
            "scenario 3, `sync`",
        ),
        at_least("queue operations: 80k/s", cycle.map(|s| s.ops_per_s), 80_000.0, "operations/s", "scenario 2, `sync`"),
        at_least("> 10k connections/s", storm.map(|s| s.ops_per_s), 10_000.0, "connections/s", "scenario 6, `sync`"),
        at_most("average latency, enqueue: 0.5 ms", half.map(|s| s.mean_us), 500.0, "mean at 50 % load, `sync`"),
        at_most("average latency, status: 0.3 ms", status.map(|s| s.mean_us), 300.0, "mean at peak, scenario 4"),
        at_most("average latency, dequeue: 0.4 ms", cycle.map(|s| s.mean_us), 400.0, "mean at peak, scenario 2"),
        at_most(
            "average latency, complex dependency: 1.2 ms",
            deps.map(|s| s.mean_us),
            1_200.0,
            "mean at peak, scenario 5",
        ),
    ]
}

/// `148.2k`, `1.79M`, `950`.
pub fn fmt_rate(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

/// Microseconds: one decimal below 10, whole numbers above, thousands separated.
pub fn fmt_us(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.1}")
    } else {
        crate::shared::thousands(value.round() as u64)
    }
}

/// Microseconds shown as milliseconds with two decimals.
pub fn fmt_ms(value_us: f64) -> String {
    format!("{:.2}", value_us / 1_000.0)
}

pub fn fmt_ratio(value: f64) -> String {
    format!("{value:.2}×")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(fmt_rate(1_790_000.0), "1.79M");
        assert_eq!(fmt_rate(148_213.0), "148.2k");
        assert_eq!(fmt_rate(950.4), "950");
        assert_eq!(fmt_us(3.04), "3.0");
        assert_eq!(fmt_us(123.6), "124");
        assert_eq!(fmt_us(1_234_567.0), "1,234,567");
        assert_eq!(fmt_ms(1_234.0), "1.23");
        assert_eq!(fmt_ratio(1.5), "1.50×");
    }

    #[test]
    fn issue17_targets_give_ours_the_peers_and_the_ratio() {
        use crate::report::model::{BenchOutput, Line, Meta};
        let bench = |ops_per_s: f64, server_cpu: f64| {
            let mut b = BenchOutput { ops_per_s, ..BenchOutput::default() };
            b.extra.insert("server_cpu".into(), serde_json::json!(server_cpu));
            b
        };
        let ours = cell(Scenario::Enqueue, Durability::Sync, System::TqxBinary);
        let meta = Meta { machine: vec![("placement".into(), "pinned apart: …".into())], ..Meta::default() };
        let lines = vec![
            Line::Meta(meta),
            // 100k/s at 0.5 cores = 5 µs/op; Redis 50k/s at 0.5 cores = 10 µs/op.
            Line::Measured { run: 1, cell: ours, bench: bench(100_000.0, 0.5) },
            Line::Measured { run: 1, cell: Cell { system: System::Redis, ..ours }, bench: bench(50_000.0, 0.5) },
            Line::Measured { run: 1, cell: Cell { system: System::RabbitMq, ..ours }, bench: bench(40_000.0, 1.0) },
            Line::Measured { run: 1, cell: Cell { system: System::Nats, ..ours }, bench: bench(60_000.0, 1.0) },
        ];
        let checks = issue17_targets(&Results::from_lines(&lines));
        let find =
            |prefix: &str| checks.iter().find(|c| c.goal.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix}"));
        let cpu = find("server CPU per op, enqueue unpipelined, `sync`");
        assert_eq!((cpu.measured.as_str(), cpu.verdict), ("0.50× (5.00 vs 10.00 µs/op)", Verdict::Met));
        let redis = find("throughput, enqueue unpipelined, `sync`: ≥ 1.5×");
        assert_eq!((redis.measured.as_str(), redis.verdict), ("2.00× (100.0k vs 50.0k)", Verdict::Met));
        let rabbit = find("durable enqueue unpipelined (`sync`): ≥ 3× RabbitMQ");
        assert_eq!((rabbit.measured.as_str(), rabbit.verdict), ("2.50× (100.0k vs 40.0k)", Verdict::NotMet));
        assert_eq!(find("durable enqueue unpipelined (`sync`): ≥ 2× NATS").verdict, Verdict::NotMet);
        assert_eq!(find("durable cycle ×16").verdict, Verdict::Unknown);
    }

    #[test]
    fn issue18_compares_the_tls_cost_ratios_of_ours_and_redis() {
        use crate::report::model::{BenchOutput, Line};
        let bench = |ops_per_s: f64, server_cpu: f64| {
            let mut b = BenchOutput { ops_per_s, ..BenchOutput::default() };
            b.extra.insert("server_cpu".into(), serde_json::json!(server_cpu));
            b
        };
        let plain = cell(Scenario::Enqueue, Durability::Memory, System::TqxBinary);
        let tls = Cell { tls: true, ..plain };
        let redis = |c: Cell| Cell { system: System::Redis, ..c };
        let lines = vec![
            // Ours: 5 → 6 µs/op (1.20×), 100k → 90k/s; Redis: 10 → 15 µs/op (1.50×), 50k → 40k/s.
            Line::Measured { run: 1, cell: plain, bench: bench(100_000.0, 0.5) },
            Line::Measured { run: 1, cell: tls, bench: bench(90_000.0, 0.54) },
            Line::Measured { run: 1, cell: redis(plain), bench: bench(50_000.0, 0.5) },
            Line::Measured { run: 1, cell: redis(tls), bench: bench(40_000.0, 0.6) },
        ];
        let checks = issue18_targets(&Results::from_lines(&lines));
        assert_eq!(checks.len(), 4);
        assert!(checks[0].goal.contains("enqueue unpipelined"), "{}", checks[0].goal);
        assert_eq!(checks[0].measured, "1.20× vs 1.50× (throughput TLS ÷ plain: 0.90× vs 0.80×)");
        assert_eq!(checks[0].verdict, Verdict::Met);
        assert!(checks[1..].iter().all(|c| c.verdict == Verdict::Unknown && c.measured == "—"));
        // The other way round, it is not met.
        let swapped = vec![
            Line::Measured { run: 1, cell: plain, bench: bench(50_000.0, 0.5) },
            Line::Measured { run: 1, cell: tls, bench: bench(40_000.0, 0.6) },
            Line::Measured { run: 1, cell: redis(plain), bench: bench(100_000.0, 0.5) },
            Line::Measured { run: 1, cell: redis(tls), bench: bench(90_000.0, 0.54) },
        ];
        assert_eq!(issue18_targets(&Results::from_lines(&swapped))[0].verdict, Verdict::NotMet);
    }

    #[test]
    fn nothing_measured_is_unknown_never_met() {
        let results = Results::default();
        for check in targets(&results)
            .iter()
            .chain(design_rows(&results).iter())
            .chain(issue17_targets(&results).iter())
            .chain(issue18_targets(&results).iter())
        {
            assert_eq!(check.verdict, Verdict::Unknown, "{}", check.goal);
        }
    }
}
