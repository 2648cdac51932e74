//! The five measurements, one fresh server each (or per point), written to
//! `footprint.jsonl` as they are made, then `footprint.md` and its plots.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::bench::{self, f64_at, u64_at};
use super::plan::{Plan, Scale};
use super::procfs;
use super::record::{bytes_per_conn, bytes_per_task, Axis, Machine, Record};
use super::server::Tqx;

/// Pause between the end of a preload (or the opening of connections) and
/// reading RSS: the server finishes what it was doing (replies, allocator
/// bookkeeping) before it is measured.
const SETTLE: Duration = Duration::from_millis(500);
/// How long a fresh server may take to answer `GET /healthz`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a restart may take to recover (10M tasks: the target is 30 s).
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a preload may take (10M tasks in `sync` mode).
const PRELOAD_TIMEOUT: Duration = Duration::from_secs(3_600);
/// Time a `tqx-bench run` or `hold` may take beyond its own seconds.
const CALL_SLACK: Duration = Duration::from_secs(180);
/// Connections of every cycle run at least: half produce, half consume.
const CYCLE_CONNECTIONS_MIN: usize = 2;

/// What `bench-footprint` was asked for.
#[derive(Clone, Debug)]
pub struct Options {
    pub scale: Scale,
    /// Where `footprint.jsonl`, `footprint.md` and the plots go.
    pub out: PathBuf,
    /// Where the servers' data directories and logs go (removed as it goes).
    pub work: PathBuf,
    pub tqx: PathBuf,
    pub tqx_bench: PathBuf,
    /// The command line shown in the report.
    pub command: String,
    /// The open-file limit in force (the servers inherit it, or raise it
    /// further when they may).
    pub nofile_limit: u64,
}

struct Ctx<'a> {
    opts: &'a Options,
    plan: Plan,
    records: Vec<Record>,
    jsonl: File,
    next_dir: usize,
}

impl Ctx<'_> {
    fn record(&mut self, record: Record) -> Result<(), String> {
        let line = serde_json::to_string(&record).map_err(|e| format!("serializing a record: {e}"))?;
        eprintln!("bench-footprint: {line}");
        writeln!(self.jsonl, "{line}").map_err(|e| format!("writing footprint.jsonl: {e}"))?;
        self.records.push(record);
        Ok(())
    }

    fn failed(&mut self, measurement: &str, error: String) -> Result<(), String> {
        self.record(Record::Failure { measurement: measurement.to_string(), error })
    }

    /// A fresh server with a fresh data directory, ready.
    fn server(&mut self, durability: &str) -> Result<(Tqx, PathBuf), String> {
        self.next_dir += 1;
        let dir = self.opts.work.join(format!("{:03}-{durability}", self.next_dir));
        let data = dir.join("data");
        fs::create_dir_all(&data).map_err(|e| format!("creating {}: {e}", data.display()))?;
        let mut server = Tqx::start(&self.opts.tqx, durability, &data, &dir.join("server.log"))?;
        server.wait_ready(READY_TIMEOUT)?;
        Ok((server, dir))
    }

    fn bench(&self, args: Vec<String>, timeout: Duration) -> Result<bench::Output, String> {
        bench::call(&self.opts.tqx_bench, &args, timeout)
    }

    fn preload(&self, server: &Tqx, tasks: u64) -> Result<f64, String> {
        let args = strings(&[
            "preload",
            "--system",
            "tqx-binary",
            "--addr",
            &server.binary.to_string(),
            "--tasks",
            &tasks.to_string(),
            "--payload-bytes",
            &self.plan.payload_bytes.to_string(),
        ]);
        let json = self.bench(args, PRELOAD_TIMEOUT)?.ok("preload")?;
        let preloaded = u64_at(&json, &["preloaded"]).unwrap_or(0);
        if preloaded != tasks {
            return Err(format!("preload: {preloaded} tasks, not {tasks}"));
        }
        Ok(f64_at(&json, &["seconds"]).unwrap_or(0.0))
    }

    fn run_scenario(&self, server: &Tqx, scenario: &str, connections: usize) -> Result<Value, String> {
        let args = strings(&[
            "run",
            "--system",
            "tqx-binary",
            "--addr",
            &server.binary.to_string(),
            "--scenario",
            scenario,
            "--connections",
            &connections.to_string(),
            "--seconds",
            &self.plan.run_seconds.to_string(),
            "--warmup-seconds",
            &self.plan.warmup_seconds.to_string(),
            "--payload-bytes",
            &self.plan.payload_bytes.to_string(),
        ]);
        let timeout = Duration::from_secs_f64(self.plan.run_seconds + self.plan.warmup_seconds) + CALL_SLACK;
        self.bench(args, timeout)?.ok(&format!("run {scenario} --connections {connections}"))
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Removes a finished server's directory (10M tasks in `sync` mode take GBs).
fn cleanup(dir: &Path) {
    if let Err(e) = fs::remove_dir_all(dir) {
        eprintln!("bench-footprint: cannot remove {}: {e}", dir.display());
    }
}

/// Makes every measurement, then writes `footprint.md` and the plots.
/// Returns the number of failed measurements; `Err` when the run could not be
/// made at all (the output directory, the JSON lines file).
pub fn run(opts: &Options) -> Result<usize, String> {
    fs::create_dir_all(&opts.out).map_err(|e| format!("creating {}: {e}", opts.out.display()))?;
    fs::create_dir_all(&opts.work).map_err(|e| format!("creating {}: {e}", opts.work.display()))?;
    let jsonl_path = opts.out.join("footprint.jsonl");
    let jsonl = File::create(&jsonl_path).map_err(|e| format!("creating {}: {e}", jsonl_path.display()))?;
    let mut ctx = Ctx { opts, plan: Plan::for_scale(opts.scale), records: Vec::new(), jsonl, next_dir: 0 };
    let started = Instant::now();
    ctx.record(Record::Machine(machine(opts)))?;

    for durability in ["memory", "sync"] {
        if let Err(e) = task_rss(&mut ctx, durability) {
            ctx.failed(&format!("memory per task ({durability})"), e)?;
        }
    }
    if let Err(e) = conn_rss(&mut ctx) {
        ctx.failed("memory per connection", e)?;
    }
    if let Err(e) = storm(&mut ctx) {
        ctx.failed("connection rate", e)?;
    }
    scaling(&mut ctx)?;
    for tasks in ctx.plan.recovery_tasks.clone() {
        if let Err(e) = recovery(&mut ctx, tasks) {
            ctx.failed(&format!("recovery of {tasks} tasks"), e)?;
        }
    }

    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let markdown = super::render(&ctx.records, minutes);
    let md_path = opts.out.join("footprint.md");
    fs::write(&md_path, markdown).map_err(|e| format!("writing {}: {e}", md_path.display()))?;
    for (name, svg) in
        [(super::TASK_PLOT, super::task_plot(&ctx.records)), (super::CONN_PLOT, super::conn_plot(&ctx.records))]
    {
        match svg {
            Ok(svg) => {
                let path = opts.out.join(name);
                fs::write(&path, svg).map_err(|e| format!("writing {}: {e}", path.display()))?;
            }
            Err(e) => eprintln!("bench-footprint: plot {name} not drawn: {e}"),
        }
    }
    Ok(ctx.records.iter().filter(|r| matches!(r, Record::Failure { .. })).count())
}

/// Measurement 1: a fresh server per task count, RSS after the preload.
fn task_rss(ctx: &mut Ctx<'_>, durability: &str) -> Result<(), String> {
    let (mut server, dir) = ctx.server(durability)?;
    thread::sleep(SETTLE);
    let empty = server.rss()?;
    server.stop();
    cleanup(&dir);
    let payload_bytes = ctx.plan.payload_bytes;
    ctx.record(Record::TaskRss {
        durability: durability.into(),
        tasks: 0,
        payload_bytes,
        rss_bytes: empty,
        rss_empty_bytes: empty,
        bytes_per_task: None,
        rss_loaded_bytes: empty,
        rss_peak_bytes: empty,
        preload_seconds: 0.0,
    })?;
    for tasks in ctx.plan.task_counts.clone() {
        let point = (|| {
            let (mut server, dir) = ctx.server(durability)?;
            let preload_seconds = ctx.preload(&server, tasks)?;
            thread::sleep(SETTLE);
            let loaded = server.rss()?;
            thread::sleep(Duration::from_secs_f64(ctx.plan.settle_seconds));
            let rss = server.rss()?;
            let peak = server.peak_rss()?;
            server.stop();
            cleanup(&dir);
            Ok::<_, String>(Record::TaskRss {
                durability: durability.into(),
                tasks,
                payload_bytes,
                rss_bytes: rss,
                rss_empty_bytes: empty,
                bytes_per_task: bytes_per_task(rss, empty, tasks, payload_bytes),
                rss_loaded_bytes: loaded,
                rss_peak_bytes: peak,
                preload_seconds,
            })
        })();
        match point {
            Ok(record) => ctx.record(record)?,
            Err(e) => ctx.failed(&format!("memory per task ({durability}, {tasks} tasks)"), e)?,
        }
    }
    Ok(())
}

/// Measurement 2 (and 3's time to open N at once): `memory` mode, a fresh
/// server per point; RSS read while `hold` holds the connections.
fn conn_rss(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let (mut server, dir) = ctx.server("memory")?;
    thread::sleep(SETTLE);
    let empty = server.rss()?;
    server.stop();
    cleanup(&dir);
    ctx.record(Record::ConnRss {
        connections: 0,
        rate_per_conn: None,
        rss_bytes: empty,
        rss_empty_bytes: empty,
        bytes_per_conn: None,
        opened: 0,
        open_seconds: 0.0,
        ops: 0,
        errors: 0,
        p99_us: None,
    })?;
    let mut points: Vec<(u64, Option<f64>)> = ctx.plan.idle_connections.iter().map(|&n| (n, None)).collect();
    points.push((ctx.plan.sending_connections, Some(ctx.plan.rate_per_conn)));
    for (connections, rate) in points {
        let point = (|| {
            let (mut server, dir) = ctx.server("memory")?;
            let seconds = match rate {
                Some(_) => ctx.plan.sending_hold_seconds,
                None => ctx.plan.idle_hold_seconds + SETTLE.as_secs_f64(),
            };
            let mut args = strings(&[
                "hold",
                "--system",
                "tqx-binary",
                "--addr",
                &server.binary.to_string(),
                "--connections",
                &connections.to_string(),
                "--seconds",
                &seconds.to_string(),
                "--payload-bytes",
                &ctx.plan.payload_bytes.to_string(),
            ]);
            if let Some(rate) = rate {
                args.extend(strings(&["--rate-per-conn", &rate.to_string()]));
            }
            // Idle: once the server has settled; sending: halfway through.
            let wait = match rate {
                Some(_) => Duration::from_secs_f64(seconds / 2.0),
                None => SETTLE,
            };
            let timeout = Duration::from_secs_f64(seconds) + CALL_SLACK;
            let (output, rss) = bench::hold(&ctx.opts.tqx_bench, &args, timeout, bench::HoldEnd::Natural, |_| {
                thread::sleep(wait);
                server.rss()
            })?;
            let rss = rss.ok_or_else(|| format!("hold never printed `holding`: {}", output.stderr_tail))??;
            server.stop();
            cleanup(&dir);
            // A partial hold still reports (exit 1): how far it got is the figure.
            let json = output.json.ok_or_else(|| format!("hold: no JSON line: {}", output.stderr_tail))?;
            let opened = u64_at(&json, &["opened"]).unwrap_or(0);
            Ok::<_, String>(Record::ConnRss {
                connections,
                rate_per_conn: rate,
                rss_bytes: rss,
                rss_empty_bytes: empty,
                bytes_per_conn: bytes_per_conn(rss, empty, opened),
                opened,
                open_seconds: f64_at(&json, &["open_seconds"]).unwrap_or(0.0),
                ops: u64_at(&json, &["ops"]).unwrap_or(0),
                errors: u64_at(&json, &["errors"]).unwrap_or(0),
                p99_us: f64_at(&json, &["latency_us", "p99"]),
            })
        })();
        match point {
            Ok(record) => ctx.record(record)?,
            Err(e) => ctx.failed(&format!("memory per connection ({connections} connections)"), e)?,
        }
    }
    Ok(())
}

/// Measurement 3: connections per second, each serving one enqueue.
fn storm(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let (server, dir) = ctx.server("memory")?;
    let json = ctx.run_scenario(&server, "storm", ctx.plan.storm_loops);
    server.stop();
    cleanup(&dir);
    let json = json?;
    ctx.record(Record::Storm {
        loops: ctx.plan.storm_loops,
        seconds: ctx.plan.run_seconds,
        conns_per_s: f64_at(&json, &["ops_per_s"]).unwrap_or(0.0),
        p99_us: f64_at(&json, &["latency_us", "p99"]).unwrap_or(0.0),
        errors: u64_at(&json, &["errors"]).unwrap_or(0),
    })
}

/// Measurement 4: throughput and p99 against connections (enqueue, cycle) and
/// against backlog (cycle), `memory` mode, a fresh server per point.
fn scaling(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let mut points: Vec<(Axis, &str, usize, u64)> = Vec::new();
    for scenario in ["enqueue", "cycle"] {
        for &connections in &ctx.plan.scaling_connections {
            let connections = if scenario == "cycle" { connections.max(CYCLE_CONNECTIONS_MIN) } else { connections };
            points.push((Axis::Connections, scenario, connections, 0));
        }
    }
    for &backlog in &ctx.plan.backlogs {
        points.push((Axis::Backlog, "cycle", ctx.plan.backlog_connections, backlog));
    }
    for (axis, scenario, connections, backlog) in points {
        let point = (|| {
            let (server, dir) = ctx.server("memory")?;
            if backlog > 0 {
                ctx.preload(&server, backlog)?;
            }
            let json = ctx.run_scenario(&server, scenario, connections);
            server.stop();
            cleanup(&dir);
            let json = json?;
            Ok::<_, String>(Record::Scaling {
                axis,
                scenario: scenario.into(),
                connections,
                backlog,
                ops_per_s: f64_at(&json, &["ops_per_s"]).unwrap_or(0.0),
                p50_us: f64_at(&json, &["latency_us", "p50"]).unwrap_or(0.0),
                p99_us: f64_at(&json, &["latency_us", "p99"]).unwrap_or(0.0),
                errors: u64_at(&json, &["errors"]).unwrap_or(0),
                client_cpu: f64_at(&json, &["client_cpu"]).unwrap_or(0.0),
            })
        })();
        match point {
            Ok(record) => ctx.record(record)?,
            Err(e) => ctx.failed(&format!("scaling ({scenario}, {connections} connections, backlog {backlog})"), e)?,
        }
    }
    Ok(())
}

/// The periodic checkpoint interval of the server whose log is replayed
/// (measurement 5): long enough that only the early checkpoint at 1,000,000
/// changed rows runs during the preload, so the log holds everything since
/// the last of those: the most a checkpoint lets it hold (a "full" log).
const RECOVERY_CHECKPOINT_INTERVAL_MS: &str = "600000";

/// Measurement 5: `sync` mode, preload with periodic checkpoints held off,
/// SIGKILL (no final checkpoint: the log since the last checkpoint is
/// replayed), restart on the same data directory, time to `GET /healthz` 200,
/// and what the restart says it replayed.
fn recovery(ctx: &mut Ctx<'_>, tasks: u64) -> Result<(), String> {
    ctx.next_dir += 1;
    let dir = ctx.opts.work.join(format!("{:03}-recovery", ctx.next_dir));
    let data = dir.join("data");
    fs::create_dir_all(&data).map_err(|e| format!("creating {}: {e}", data.display()))?;
    let flags = ["--checkpoint-interval-ms", RECOVERY_CHECKPOINT_INTERVAL_MS];
    let mut server = Tqx::start_with(&ctx.opts.tqx, "sync", &data, &dir.join("server.log"), "warn", &flags)?;
    server.wait_ready(READY_TIMEOUT)?;
    let preloaded = ctx.preload(&server, tasks);
    server.kill()?;
    preloaded?;
    let data_bytes = procfs::dir_bytes(&data);
    let wal_bytes = procfs::dir_bytes(&data.join("wal"));
    let mut restarted = Tqx::start_with(&ctx.opts.tqx, "sync", &data, &dir.join("restart.log"), "info", &[])?;
    let ready = restarted.wait_ready(RECOVERY_TIMEOUT);
    let rss = restarted.rss();
    let listening = restarted.listening_after;
    let replayed = replayed_records(&restarted.log_text());
    restarted.stop();
    cleanup(&dir);
    ctx.record(Record::Recovery {
        tasks,
        data_bytes,
        wal_bytes,
        wal_records_replayed: replayed,
        listening_seconds: round3(listening.as_secs_f64()),
        ready_seconds: round3(ready?.as_secs_f64()),
        rss_bytes: rss?,
    })
}

/// `records=N` of the server's `recovered` log line.
fn replayed_records(log: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains("recovered"))?;
    line.split_whitespace().find_map(|field| field.strip_prefix("records=")?.parse().ok())
}

fn round3(value: f64) -> f64 {
    (value * 1_000.0).round() / 1_000.0
}

fn machine(opts: &Options) -> Machine {
    let unknown = || "unknown".to_string();
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim().to_string()))
        })
        .unwrap_or_else(unknown);
    // The run's own output (`--out docs/benchmarks/footprint`, truncated by now)
    // does not make the tree count as changed.
    let exclude_out = format!(":(exclude){}", opts.out.display());
    let status_args = ["status", "--porcelain", "--untracked-files=no", "--", ".", exclude_out.as_str()];
    let git_commit = match crate::shared::command_line("git", &["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) => match crate::shared::command_line("git", &status_args) {
            Some(status) if !status.is_empty() => format!("{commit} (with uncommitted changes)"),
            _ => commit,
        },
        None => unknown(),
    };
    Machine {
        cores: thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        cpu,
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_string())
            .unwrap_or_else(|_| unknown()),
        memory_bytes: fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| procfs::kb_field(&t, "MemTotal"))
            .unwrap_or(0),
        git_commit,
        scale: opts.scale.name().into(),
        command: opts.command.clone(),
        started_utc: crate::shared::command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_else(unknown),
        nofile_limit: opts.nofile_limit,
    }
}

#[cfg(test)]
mod tests {
    use super::replayed_records;

    #[test]
    fn replayed_records_come_from_the_recovered_line() {
        let log = "2026-11-25T01:00:00Z  INFO taskqueuex::server: replaying the write-ahead log replayed=10 of=20\n\
                   2026-11-25T01:00:01Z  INFO taskqueuex::server::durability: recovered checkpoint_lsn=7 records=912345 \
                   bytes=1000 tasks=5 elapsed_ms=3 mode=sync\n";
        assert_eq!(replayed_records(log), Some(912_345));
        assert_eq!(replayed_records("INFO listening http=127.0.0.1:1"), None);
    }
}
