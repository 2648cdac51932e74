//! Which cells one run measures, and in what order.
//!
//! Order: durability, then scenario, then the row's parameters, then the
//! systems in [`System::ALL`] order. The systems of a row therefore run one
//! right after the other (A B C, then the next row's A B C, and the next run
//! repeats the whole list), so drift on a shared machine — a noisy neighbour, a
//! page-cache flush, thermal state — hits all of them rather than one. Within a
//! durability level, the enqueue cells come before the latency cells whose
//! offered load is a share of their peak.
//!
//! **TLS rows** (issue 18): the `memory` enqueue and full cycle, unpipelined
//! and [`PIPELINE_DEEP`] deep, once more with every connection over TLS, for
//! [`TLS_SYSTEMS`]; each right after its plain twin, so that the ratio TLS ÷
//! plain comes from back-to-back measurements of the same run. `memory`
//! (Redis without persistence) because there the disk does not hide what the
//! encryption costs. The full run adds one row with tokens on as well (the
//! unpipelined enqueue, [`TOKEN_SYSTEMS`]), right after its TLS row. `--only
//! tls` measures just these rows and their twins.

use super::model::{Cell, Durability, Load, Scenario, System};

/// The systems of the TLS rows: one per protocol — TaskQueueX's binary
/// protocol and HTTP (`tqx serve --tls-cert`), and Redis (`--tls-port`).
pub const TLS_SYSTEMS: [System; 3] = [System::TqxBinary, System::TqxHttp, System::Redis];

/// The systems of the row with tokens on: TaskQueueX's two protocols (the
/// binary one authenticates once per connection, HTTP on every request).
pub const TOKEN_SYSTEMS: [System; 2] = [System::TqxBinary, System::TqxHttp];

/// What `bench/run --only` picks: scenarios, or `tls` (the TLS rows with
/// their plain twins, [`TLS_SYSTEMS`] only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    Scenario(Scenario),
    Tls,
}

impl Selection {
    /// A scenario's name, or `tls`.
    pub fn parse(name: &str) -> Option<Selection> {
        if name == "tls" {
            return Some(Selection::Tls);
        }
        Scenario::parse(name).map(Selection::Scenario)
    }
}

/// Client connections in every scenario except the idle latency cell: the load
/// the issue's reference figures were measured with (`redis-benchmark -c 50`).
pub const CONNECTIONS: u32 = 50;
/// The pipelined enqueue's depth (requests in flight per connection).
pub const PIPELINE_DEEP: u32 = 16;
/// Tasks per request in the batch scenario.
pub const BATCH_TASKS: u32 = 100;
/// Offered load of the idle latency cell, on one connection: low enough that
/// each request finds the server idle (a `sync` enqueue costs one `fdatasync`,
/// ~0.1–0.25 ms here, so the disk is busy at most a quarter of the time).
pub const IDLE_RATE_OPS: f64 = 1_000.0;
/// Latency cells' offered load, as a share of the same system's enqueue peak
/// (50 connections, unpipelined) measured earlier in the same run.
pub const LOAD_PERCENTS: [u32; 3] = [25, 50, 80];
/// Every enqueue, full-cycle, batch and status row is measured a second time
/// on the open loop, at this share of the same system's own closed-loop
/// figure in that row (measured just before, in the same run): the latency at
/// a fixed offered load, corrected for coordinated omission, at the cost of
/// one more measurement per cell. Not the DAGs (an op is three dependent
/// requests, started by the completion of the one before: a closed loop by
/// nature) nor the storm (an op is a new connection; its rate is the figure).
pub const OPEN_LOOP_PERCENT: u32 = 50;
/// Idle connections held open during one more `memory` latency cell at 50 %
/// of the peak (issue 17: p99 with 10,000 idle connections open); the peers
/// hold the same ones. Open before the measurement starts, closed after it.
pub const IDLE_CONNECTIONS: u32 = 10_000;

/// The systems that can run a scenario at a durability (`tqx-bench` exits 3
/// for the others). `redis-reliable` differs from `redis` only in how tasks
/// are taken, so it appears only in the full cycle. RabbitMQ (quorum queue,
/// confirms) and NATS JetStream run in the `sync` rows of the enqueue and the
/// full cycle: the issue compares durable figures with them, and neither has
/// a mode that matches `interval` or `memory` (NATS's own durability is not
/// `sync` either: the report says so beside its figures). `--quick` leaves
/// RabbitMQ out: it boots in 5–8 s per measurement here
/// (bench/tests/load_smoke.rs drives it against a real broker instead).
pub fn systems(scenario: Scenario, durability: Durability, quick: bool) -> Vec<System> {
    let mut systems = base_systems(scenario).to_vec();
    if durability == Durability::Sync && matches!(scenario, Scenario::Enqueue | Scenario::Cycle) {
        if !quick {
            systems.push(System::RabbitMq);
        }
        systems.push(System::Nats);
    }
    systems
}

fn base_systems(scenario: Scenario) -> &'static [System] {
    use System::*;
    match scenario {
        Scenario::Enqueue | Scenario::Storm | Scenario::Latency => &[TqxBinary, TqxHttp, Redis, Beanstalkd],
        Scenario::Cycle => &[TqxBinary, TqxHttp, Redis, RedisReliable, Beanstalkd],
        Scenario::Batch => &[TqxBinary, TqxHttp, Redis],
        // Redis: a hash per task (HSET when preloading, HGETALL to look up), as
        // Redis-based queues that answer "what state is task N in" keep one.
        Scenario::Status => &[TqxBinary, TqxHttp, Redis, Beanstalkd],
        Scenario::Deps => &[TqxBinary, TqxHttp],
    }
}

/// The durability levels a scenario runs at. Enqueue, the full cycle and the
/// batch run at all three (the issue's targets compare them); the others at the
/// two ends only, which keeps a full run within ~20 minutes on 2 cores, and
/// status lookups (reads write nothing, and with nothing appended before them none waits) at `memory` only: its
/// preload of 10,000 tasks one `put` at a time would take beanstalkd `-f 0`
/// half a minute of fsyncs per run.
fn durabilities(scenario: Scenario, quick: bool) -> &'static [Durability] {
    use Durability::*;
    if quick {
        // One level per scenario (enqueue: all three, which proves every
        // server's durability flags), the one its target is about.
        return match scenario {
            Scenario::Enqueue => &[Sync, Interval, Memory],
            Scenario::Cycle | Scenario::Batch | Scenario::Deps => &[Sync],
            Scenario::Status | Scenario::Storm => &[Memory],
            Scenario::Latency => &[Sync, Memory],
        };
    }
    match scenario {
        Scenario::Enqueue | Scenario::Cycle | Scenario::Batch => &[Sync, Interval, Memory],
        Scenario::Status => &[Memory],
        Scenario::Deps | Scenario::Storm | Scenario::Latency => &[Sync, Memory],
    }
}

/// The rows (cells without their system) of `scenario` at `durability`,
/// each TLS row right after its plain twin.
fn rows(scenario: Scenario, durability: Durability, quick: bool) -> Vec<Cell> {
    let plain = plain_rows(scenario, durability, quick);
    if durability != Durability::Memory || !matches!(scenario, Scenario::Enqueue | Scenario::Cycle) {
        return plain;
    }
    let mut rows = Vec::with_capacity(plain.len() * 2);
    for row in plain {
        rows.push(row);
        // Closed loop only; `--quick`: the unpipelined enqueue alone, which
        // proves the path in a few seconds.
        let twinned = row.load.is_none() && (!quick || (scenario == Scenario::Enqueue && row.pipeline == 1));
        if twinned {
            rows.push(Cell { tls: true, ..row });
            // The full run adds one row with tokens on over TLS (how a
            // deployment beyond loopback runs), right after the TLS row it
            // differs from only by the tokens: the cost of checking them.
            if !quick && scenario == Scenario::Enqueue && row.pipeline == 1 {
                rows.push(Cell { tls: true, tokens: true, ..row });
            }
        }
    }
    rows
}

fn plain_rows(scenario: Scenario, durability: Durability, quick: bool) -> Vec<Cell> {
    let base = Cell {
        scenario,
        durability,
        connections: CONNECTIONS,
        pipeline: 1,
        batch: None,
        load: None,
        idle: None,
        tls: false,
        tokens: false,
        system: System::TqxBinary,
    };
    let open = |row: Cell| Cell { load: Some(Load::Percent(OPEN_LOOP_PERCENT)), ..row };
    match scenario {
        Scenario::Enqueue => {
            if quick {
                // The open loop once (where every system of the quick plan
                // runs), to prove the path.
                match durability {
                    Durability::Sync => vec![base, open(base)],
                    Durability::Interval => vec![base],
                    Durability::Memory => vec![base, Cell { pipeline: PIPELINE_DEEP, ..base }],
                }
            } else {
                let deep = Cell { pipeline: PIPELINE_DEEP, ..base };
                vec![base, open(base), deep, open(deep)]
            }
        }
        Scenario::Cycle if !quick => {
            // 16 deep at the two levels the CPU-per-op target is about.
            let mut rows = vec![base, open(base)];
            if durability != Durability::Interval {
                let deep = Cell { pipeline: PIPELINE_DEEP, ..base };
                rows.extend([deep, open(deep)]);
            }
            rows
        }
        Scenario::Batch => {
            let batch = Cell { batch: Some(BATCH_TASKS), ..base };
            if quick {
                vec![batch]
            } else {
                vec![batch, open(batch)]
            }
        }
        Scenario::Status if !quick => vec![base, open(base)],
        Scenario::Latency => {
            let idle = Cell { connections: 1, load: Some(Load::Idle), ..base };
            let shares = LOAD_PERCENTS.iter().map(|p| Cell { load: Some(Load::Percent(*p)), ..base });
            let crowded = Cell { load: Some(Load::Percent(50)), idle: Some(IDLE_CONNECTIONS), ..base };
            match (durability, quick) {
                // The three targets: idle `sync`; 50 % `memory`, without and
                // with 10,000 idle connections open.
                (Durability::Sync, true) => vec![idle],
                (Durability::Memory, true) => {
                    shares.filter(|c| c.load == Some(Load::Percent(50))).chain([crowded]).collect()
                }
                (Durability::Memory, false) => std::iter::once(idle).chain(shares).chain([crowded]).collect(),
                (_, true) => shares.filter(|c| c.load == Some(Load::Percent(50))).collect(),
                (_, false) => std::iter::once(idle).chain(shares).collect(),
            }
        }
        Scenario::Cycle | Scenario::Status | Scenario::Deps | Scenario::Storm => vec![base],
    }
}

/// The cells of one run, in the order they are measured. `only` limits the
/// scenarios (their TLS rows come with [`Selection::Tls`] only); a latency
/// cell at a share of the peak brings the enqueue cell that measures the
/// peak with it, and a TLS row its plain twin.
pub fn plan(quick: bool, only: Option<&[Selection]>) -> Vec<Cell> {
    let wanted = |s: Scenario| only.is_none_or(|o| o.contains(&Selection::Scenario(s)));
    let tls_wanted = only.is_none_or(|o| o.contains(&Selection::Tls));
    let mut cells = Vec::new();
    for durability in Durability::ALL {
        for scenario in Scenario::ALL {
            let peak_needed = scenario == Scenario::Enqueue
                && wanted(Scenario::Latency)
                && rows(Scenario::Latency, durability, quick).iter().any(|c| matches!(c.load, Some(Load::Percent(_))))
                && durabilities(Scenario::Latency, quick).contains(&durability);
            let in_levels = durabilities(scenario, quick).contains(&durability);
            let included = wanted(scenario) && in_levels;
            let scenario_rows = rows(scenario, durability, quick);
            let tls_rows: Vec<Cell> =
                scenario_rows.iter().filter(|c| c.tls && tls_wanted && in_levels).copied().collect();
            let all_systems = systems(scenario, durability, quick);
            let tls_systems: Vec<System> = all_systems.iter().filter(|s| TLS_SYSTEMS.contains(s)).copied().collect();
            let token_systems: Vec<System> =
                all_systems.iter().filter(|s| TOKEN_SYSTEMS.contains(s)).copied().collect();
            for row in scenario_rows {
                let tls_twin = tls_rows.contains(&Cell { tls: true, tokens: false, ..row });
                let row_systems = if row.tls {
                    // TLS rows only where `tls` is selected.
                    if tls_rows.contains(&row) && row.tokens {
                        &token_systems
                    } else if tls_rows.contains(&row) {
                        &tls_systems
                    } else {
                        continue;
                    }
                } else if included {
                    &all_systems
                } else if peak_needed && row.pipeline == 1 && row.load.is_none() {
                    // Only the peak: unpipelined enqueue, closed loop.
                    &all_systems
                } else if tls_twin {
                    &tls_systems
                } else {
                    continue;
                };
                for system in row_systems {
                    cells.push(Cell { system: *system, ..row });
                }
            }
        }
    }
    cells
}

/// The closed-loop cell whose throughput sets an open-loop cell's offered
/// load: for the latency scenario, the unpipelined enqueue; for an enqueue or
/// cycle row at a share of its peak, the same row on the closed loop.
pub fn peak_cell(open: &Cell) -> Cell {
    match open.scenario {
        Scenario::Latency => Cell {
            scenario: Scenario::Enqueue,
            connections: CONNECTIONS,
            pipeline: 1,
            batch: None,
            load: None,
            idle: None,
            tls: false,
            tokens: false,
            ..*open
        },
        _ => Cell { load: None, ..*open },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_plan_covers_the_issues_matrix() {
        let cells = plan(false, None);
        let count = |s: Scenario| cells.iter().filter(|c| c.scenario == s).count();
        // Two depths, each closed and open loop; RabbitMQ and NATS at `sync`.
        // Plus the two TLS rows (`memory`, both depths) for the three TLS
        // systems, and the row with tokens for TaskQueueX's two.
        assert_eq!(count(Scenario::Enqueue), (3 * 2 * 4 + 2 * 2) * 2 + 2 * 3 + 2);
        // Unpipelined at three levels, 16 deep at `sync` and `memory`.
        assert_eq!(count(Scenario::Cycle), ((3 * 5 + 2) + (2 * 5 + 2)) * 2 + 2 * 3);
        // Every enqueue and cycle row has its open-loop twin, after it.
        for (index, cell) in cells.iter().enumerate() {
            let twinned =
                matches!(cell.scenario, Scenario::Enqueue | Scenario::Cycle | Scenario::Batch | Scenario::Status);
            if twinned && cell.load.is_none() && !cell.tls {
                let twin = Cell { load: Some(Load::Percent(OPEN_LOOP_PERCENT)), ..*cell };
                let at = cells.iter().position(|c| *c == twin).expect("open-loop twin planned");
                assert!(at > index, "{twin} after {cell}");
            }
        }
        let brokers = cells.iter().filter(|c| matches!(c.system, System::RabbitMq | System::Nats));
        assert!(brokers.clone().all(|c| c.durability == Durability::Sync), "brokers only where they match");
        assert_eq!(brokers.count(), (2 * 2 + 2 * 2) * 2);
        assert_eq!(count(Scenario::Batch), 3 * 3 * 2);
        assert_eq!(count(Scenario::Status), 4 * 2);
        assert_eq!(count(Scenario::Deps), 2 * 2);
        assert_eq!(count(Scenario::Storm), 2 * 4);
        // Idle, 25, 50 and 80 % at both levels; 50 % with 10,000 idle
        // connections open at `memory`.
        assert_eq!(count(Scenario::Latency), (2 * 4 + 1) * 4);
        let crowded = cells.iter().filter(|c| c.idle.is_some());
        assert!(crowded.clone().all(|c| c.scenario == Scenario::Latency
            && c.durability == Durability::Memory
            && c.load == Some(Load::Percent(50))
            && c.idle == Some(IDLE_CONNECTIONS)));
        assert_eq!(crowded.count(), 4);
        // Every cell once.
        let unique: std::collections::BTreeSet<_> = cells.iter().collect();
        assert_eq!(unique.len(), cells.len());
    }

    #[test]
    fn systems_alternate_within_each_row_and_peaks_come_first() {
        let cells = plan(false, None);
        for pair in cells.windows(2) {
            if pair[0].row() == pair[1].row() {
                assert!(pair[0].system < pair[1].system, "{} then {}", pair[0], pair[1]);
            }
        }
        for (index, cell) in cells.iter().enumerate() {
            if let Some(Load::Percent(_)) = cell.load {
                let peak = peak_cell(cell);
                let at = cells.iter().position(|c| *c == peak).expect("peak cell planned");
                assert!(at < index, "{cell} before its peak");
            }
        }
    }

    #[test]
    fn quick_is_small_and_still_has_every_scenario() {
        let cells = plan(true, None);
        for scenario in Scenario::ALL {
            assert!(cells.iter().any(|c| c.scenario == scenario), "{scenario}");
        }
        assert!(cells.len() <= 56, "{}", cells.len());
        assert!(cells.iter().any(|c| c.idle == Some(IDLE_CONNECTIONS)), "the 10,000-idle target is measured");
        assert!(!cells.iter().any(|c| c.system == System::RabbitMq), "RabbitMQ boots too slowly for --quick");
        assert!(cells.iter().any(|c| c.system == System::Nats && c.scenario == Scenario::Cycle));
        assert!(cells.iter().any(|c| c.system == System::Nats && c.load.is_some()));
        for durability in Durability::ALL {
            assert!(cells.iter().any(|c| c.durability == durability));
        }
    }

    #[test]
    fn only_latency_brings_its_peaks() {
        let cells = plan(true, Some(&[Selection::Scenario(Scenario::Latency)]));
        let enqueues: Vec<_> = cells.iter().filter(|c| c.scenario == Scenario::Enqueue).collect();
        // Quick latency at a share of the peak is `memory` only.
        assert_eq!(enqueues.len(), 4);
        assert!(enqueues.iter().all(|c| c.durability == Durability::Memory && c.pipeline == 1));
        let only_cycle = plan(true, Some(&[Selection::Scenario(Scenario::Cycle)]));
        assert!(only_cycle.iter().all(|c| c.scenario == Scenario::Cycle));
    }

    #[test]
    fn tls_rows_follow_their_plain_twins_in_the_same_run() {
        for (quick, only) in [(false, None), (true, None), (false, Some(&[Selection::Tls][..]))] {
            let cells = plan(quick, only);
            let tls: Vec<&Cell> = cells.iter().filter(|c| c.tls).collect();
            assert!(!tls.is_empty(), "quick {quick}, only {only:?}");
            for cell in &tls {
                assert_eq!(cell.durability, Durability::Memory, "{cell}");
                assert!(matches!(cell.scenario, Scenario::Enqueue | Scenario::Cycle), "{cell}");
                assert_eq!(cell.load, None, "{cell}");
                assert!(TLS_SYSTEMS.contains(&cell.system), "{cell}");
            }
            // The TLS row's first cell comes right after its twin row's last
            // (the row with tokens: right after its TLS row).
            let rows: Vec<_> =
                tls.iter().map(|c| c.row()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
            for row in rows {
                let first = cells.iter().position(|c| c.row() == row).unwrap();
                let twin = match row.tokens {
                    false => crate::report::model::Row { tls: false, ..row },
                    true => crate::report::model::Row { tokens: false, ..row },
                };
                let twin_last = cells.iter().rposition(|c| c.row() == twin).expect("plain twin planned");
                assert_eq!(twin_last + 1, first, "{row:?} right after its twin");
                for system in TLS_SYSTEMS.iter().filter(|s| cells.contains(&row.cell(**s))) {
                    assert!(cells.contains(&twin.cell(*system)), "{system} plain twin of {row:?}");
                }
            }
        }
        // The full run: both scenarios, both depths, every TLS system; and
        // the unpipelined enqueue with tokens, for TaskQueueX.
        let full = plan(false, None);
        assert_eq!(full.iter().filter(|c| c.tls).count(), 2 * 2 * TLS_SYSTEMS.len() + TOKEN_SYSTEMS.len());
        let tokens: Vec<&Cell> = full.iter().filter(|c| c.tokens).collect();
        assert_eq!(tokens.len(), TOKEN_SYSTEMS.len());
        assert!(tokens.iter().all(|c| c.tls && c.scenario == Scenario::Enqueue && c.pipeline == 1));
        // `--quick`: the smallest cell, one system per protocol.
        let quick: Vec<Cell> = plan(true, None).into_iter().filter(|c| c.tls).collect();
        assert_eq!(quick.len(), TLS_SYSTEMS.len());
        assert!(quick.iter().all(|c| c.scenario == Scenario::Enqueue && c.pipeline == 1));
    }

    #[test]
    fn only_tls_is_the_tls_rows_and_their_twins() {
        let cells = plan(false, Some(&[Selection::Tls]));
        // Enqueue and cycle, two depths, plain and TLS, three systems; the
        // row with tokens.
        assert_eq!(cells.len(), 2 * 2 * 2 * TLS_SYSTEMS.len() + TOKEN_SYSTEMS.len());
        assert_eq!(cells.iter().filter(|c| c.tls && !c.tokens).count(), 2 * 2 * TLS_SYSTEMS.len());
        assert!(cells.iter().all(|c| TLS_SYSTEMS.contains(&c.system) && c.durability == Durability::Memory));
        // A scenario alone leaves its TLS rows out.
        assert!(!plan(false, Some(&[Selection::Scenario(Scenario::Enqueue)])).iter().any(|c| c.tls));
        assert_eq!(Selection::parse("tls"), Some(Selection::Tls));
        assert_eq!(Selection::parse("cycle"), Some(Selection::Scenario(Scenario::Cycle)));
        assert_eq!(Selection::parse("tsl"), None);
    }
}
