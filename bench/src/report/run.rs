//! The orchestrator behind `bench/run`: starts each server on loopback with the
//! matched durability, runs `tqx-bench` against it, stops it, and appends one
//! results line per measurement.
//!
//! Every measurement gets a fresh server with a fresh data directory (started,
//! measured, stopped, deleted): a cell never inherits the backlog, the log or
//! the page cache of the one before it, and only one server runs at a time, so
//! no idle peer competes for the 2 cores. Servers are started the way the
//! issue's table says:
//!
//! ```text
//! tqx serve --http 127.0.0.1:0 --binary 127.0.0.1:0 --data DIR --durability sync|interval:1000|memory
//! redis-server --port P --bind 127.0.0.1 --save '' --dir DIR --appendonly yes --appendfsync always|everysec  (or --appendonly no)
//! beanstalkd -l 127.0.0.1 -p P -b DIR -f 0|1000                                                            (or no -b)
//! rabbitmq-server (environment: node name, ports, data and config under DIR; `sync` only)
//! nats-server -c DIR/nats.conf  (JetStream, store_dir under DIR; `sync` rows only, as its own class)
//! ```
//!
//! A TLS cell (issue 18) starts the same server with TLS, from a throwaway CA
//! and server certificate made once per run ([`TlsFiles`], rcgen, for
//! `localhost` and `127.0.0.1`, under the run's data root), and gives
//! `tqx-bench` `--tls-ca`:
//!
//! ```text
//! tqx serve ... --tls-cert DIR/server.pem --tls-key DIR/server.key
//! redis-server ... --port 0 --tls-port P --tls-cert-file DIR/server.pem --tls-key-file DIR/server.key --tls-ca-cert-file DIR/ca.pem --tls-auth-clients no
//! ```
//!
//! The row with tokens on also starts `tqx serve --tokens FILE`, FILE made
//! once per run by `tqx token create --scope admin`, and gives `tqx-bench`
//! that token (`--token`).
//!
//! RabbitMQ boots in ~5–8 s here (the Erlang VM and its boot steps), against
//! milliseconds for the others; it still gets a fresh broker per measurement
//! (the figures of a cell then never depend on the one before, as for every
//! other system), which costs a full run about 5 minutes. It is stopped by
//! SIGKILL: its data directory is thrown away, and a graceful stop takes
//! seconds. Its `epmd` (Erlang's port mapper, started by the first broker)
//! stays running between measurements and after the run, as on any RabbitMQ host.
//!
//! **Placement** ([`Placement`]): by default every server runs on all the
//! allowed CPUs but the last, and `tqx-bench` on the last (`taskset`):
//! `bench-report` pins itself to the server CPUs, so every server it starts
//! inherits them (`tqx serve` respects its affinity mask), and runs `tqx-bench`
//! under `taskset -c CLIENT`. `--placement shared` leaves everything where the
//! scheduler puts it (the mode of the runs before issue 17).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use super::model::{BenchOutput, Cell, Durability, FsyncUs, Line, Load, Meta, Server, System};
use super::plan::{self, IDLE_RATE_OPS};
use crate::footprint::bench::{hold, HoldEnd};
use crate::load::fdlimit;
use crate::shared::{command_line, last_json_line, run_with_timeout, tail};

/// How long a server may take to answer its first health check. Generous: a
/// fresh `tqx` data directory opens RocksDB and preallocates a log segment.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM before it is killed. The
/// measurement is over by then and its data directory is thrown away, so a
/// slow stop costs only time (and is reported in the progress line).
const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed to `tqx-bench` beyond its warm-up and measured seconds
/// (connecting, draining, printing).
const BENCH_SLACK: Duration = Duration::from_secs(60);
/// An idle hold's `--seconds`: far past any measurement, since the hold is
/// killed as soon as the measurement it backs ends.
const HOLD_SECONDS_MAX: u32 = 3_600;
/// Time an idle hold may take to open its connections, beyond a measurement's
/// own timeout.
const HOLD_OPEN_SLACK: Duration = Duration::from_secs(120);
/// The queue (or Redis list, or beanstalkd tube) every measurement uses.
pub const QUEUE: &str = "bench";

/// What `bench/run` asked for.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub quick: bool,
    pub runs: u32,
    pub seconds: f64,
    pub warmup_seconds: f64,
    pub payload_bytes: u32,
    pub only: Option<Vec<super::plan::Selection>>,
    pub tqx: PathBuf,
    pub tqx_bench: PathBuf,
    pub redis_server: PathBuf,
    pub beanstalkd: PathBuf,
    pub rabbitmq_server: PathBuf,
    pub nats_server: PathBuf,
    pub placement: Placement,
    /// Where data directories live; must be on the disk being measured (not a
    /// tmpfs), since `sync` results are mostly `fdatasync`.
    pub data_root: PathBuf,
    pub results: PathBuf,
    /// The command line to print in the report.
    pub command: String,
}

/// Runs every cell `opts.runs` times and writes the results file. Returns the
/// number of failed measurements (each also a `failure` line); an error means
/// the run could not go on at all (the results file could not be written).
pub fn run(opts: &RunOptions) -> Result<usize, String> {
    let started = Instant::now();
    fs::create_dir_all(&opts.data_root).map_err(|e| format!("creating {}: {e}", opts.data_root.display()))?;
    if let Placement::Apart { server, .. } = &opts.placement {
        // Every server is started from this thread and inherits its mask.
        set_own_affinity(server)?;
    }
    eprintln!("bench: placement: {}", opts.placement.describe());
    // The servers inherit it: beanstalkd and Redis need a descriptor per
    // connection, and the idle-connection cells hold 10,000.
    fdlimit::raise_nofile(fdlimit::NOFILE_WANTED).map_err(|e| format!("raising the open-file limit: {e}"))?;
    let mut out = ResultsWriter::create(&opts.results)?;
    let meta = Meta {
        date: command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default(),
        command: opts.command.clone(),
        quick: opts.quick,
        runs: opts.runs,
        seconds: opts.seconds,
        warmup_seconds: opts.warmup_seconds,
        payload_bytes: opts.payload_bytes,
        load_average: load_average(),
        machine: machine(opts),
    };
    out.write(&Line::Meta(meta))?;

    let cells = plan::plan(opts.quick, opts.only.as_deref());
    // Made once, before the first measurement: every TLS cell of the run
    // uses the same certificate.
    let tls = match cells.iter().any(|c| c.tls) {
        true => Some(TlsFiles::generate(&opts.data_root.join("tls"))?),
        false => None,
    };
    let tokens = match cells.iter().any(|c| c.tokens) {
        true => Some(TokenFile::create(&opts.tqx, &opts.data_root.join("tokens"))?),
        false => None,
    };
    let mut failures = 0;
    for run in 1..=opts.runs {
        eprintln!("bench: run {run}/{}: {} measurements", opts.runs, cells.len());
        out.write(&fsync_line(opts, run, 0))?;
        // Paced like the idle latency cell's requests: its reference.
        out.write(&fsync_line(opts, run, (1e6 / IDLE_RATE_OPS) as u64))?;
        // This run's enqueue peaks, which set its latency cells' offered load.
        let mut peaks: HashMap<Cell, f64> = HashMap::new();
        for (index, cell) in cells.iter().enumerate() {
            let rate = match cell.load {
                None => None,
                Some(Load::Idle) => Some(IDLE_RATE_OPS),
                Some(Load::Percent(p)) => match peaks.get(&plan::peak_cell(cell)) {
                    Some(peak) => Some(peak * f64::from(p) / 100.0),
                    None => {
                        let message = "no enqueue peak measured in this run to take a share of".to_string();
                        eprintln!("bench: [{run}/{}] {cell}: FAILED: {message}", opts.runs);
                        out.write(&Line::Failure { run, cell: Some(*cell), message })?;
                        failures += 1;
                        continue;
                    }
                },
            };
            let protection =
                Protection { tls: tls.as_ref().filter(|_| cell.tls), tokens: tokens.as_ref().filter(|_| cell.tokens) };
            let (line, timing) = measure(opts, run, cell, rate, protection);
            match &line {
                Line::Measured { bench, .. } => {
                    // A closed-loop enqueue or cycle is the peak its open-loop
                    // rows take a share of.
                    if cell.load.is_none() && bench.ops_per_s > 0.0 {
                        peaks.insert(*cell, bench.ops_per_s);
                    }
                    eprintln!(
                        "bench: [{run}/{} {:>3}/{}] {cell}: {:.0} ops/s, {:.0} tasks/s, p50 {:.0} µs, p99 {:.0} µs{} ({timing})",
                        opts.runs,
                        index + 1,
                        cells.len(),
                        bench.ops_per_s,
                        bench.tasks_per_s.unwrap_or(bench.ops_per_s),
                        bench.latency_us.p50,
                        bench.latency_us.p99,
                        if bench.errors > 0 { format!(", {} ERRORS", bench.errors) } else { String::new() },
                    );
                }
                Line::Unsupported { .. } => eprintln!("bench: [{run}/{}] {cell}: unsupported", opts.runs),
                Line::Failure { message, .. } => {
                    failures += 1;
                    eprintln!("bench: [{run}/{}] {cell}: FAILED: {message}", opts.runs);
                }
                _ => {}
            }
            out.write(&line)?;
        }
    }
    out.write(&Line::Done { elapsed_seconds: started.elapsed().as_secs_f64(), load_average: load_average() })?;
    Ok(failures)
}

/// Appends lines to the results file, flushed one by one so an interrupted run
/// keeps what it measured.
struct ResultsWriter {
    file: File,
    path: PathBuf,
}

impl ResultsWriter {
    fn create(path: &Path) -> Result<ResultsWriter, String> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        Ok(ResultsWriter { file, path: path.to_path_buf() })
    }

    fn write(&mut self, line: &Line) -> Result<(), String> {
        writeln!(self.file, "{}", line.to_json()).map_err(|e| format!("writing {}: {e}", self.path.display()))
    }
}

/// Samples of a paced `tqx-bench fsync` (each takes the pacing interval).
const FSYNC_PACED_COUNT: usize = 300;

/// `tqx-bench fsync` in a directory on the data disk, samples back to back
/// (`interval_us` 0) or paced.
fn fsync_line(opts: &RunOptions, run: u32, interval_us: u64) -> Line {
    let dir = opts.data_root.join("fsync");
    let _ = fs::remove_dir_all(&dir);
    let result = fs::create_dir_all(&dir).map_err(|e| e.to_string()).and_then(|()| {
        let mut args = vec!["fsync".to_string(), "--dir".to_string(), dir.display().to_string()];
        if interval_us > 0 {
            args.extend(["--interval-us".to_string(), interval_us.to_string()]);
            args.extend(["--count".to_string(), FSYNC_PACED_COUNT.to_string()]);
        }
        let output = run_with_timeout(&opts.tqx_bench, &args, Duration::from_secs(120))?;
        if !output.status.success() {
            return Err(format!("tqx-bench fsync: {}: {}", output.status, tail(&output.stderr)));
        }
        #[derive(serde::Deserialize)]
        struct FsyncLine {
            fdatasync_us: FsyncUs,
        }
        let line =
            last_json_line(&output.stdout).ok_or_else(|| format!("tqx-bench fsync printed {:?}", output.stdout))?;
        serde_json::from_str::<FsyncLine>(line)
            .map(|l| l.fdatasync_us)
            .map_err(|e| format!("tqx-bench fsync: {e}: {line}"))
    });
    let _ = fs::remove_dir_all(&dir);
    match result {
        Ok(fdatasync_us) => {
            eprintln!(
                "bench: [{run}] fdatasync (interval {interval_us} µs) p50 {:.0} µs, p99 {:.0} µs",
                fdatasync_us.p50, fdatasync_us.p99
            );
            Line::Fsync { run, fdatasync_us, interval_us }
        }
        Err(message) => {
            eprintln!("bench: [{run}] fsync FAILED: {message}");
            Line::Failure { run, cell: None, message }
        }
    }
}

/// One measurement: a fresh server, `tqx-bench run`, the server stopped.
fn measure(opts: &RunOptions, run: u32, cell: &Cell, rate: Option<f64>, protection: Protection<'_>) -> (Line, String) {
    let clock = Instant::now();
    let dir = opts.data_root.join("server");
    let _ = fs::remove_dir_all(&dir);
    let mut phases = Phases::default();
    let result = fs::create_dir_all(&dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))
        .and_then(|()| measure_in(opts, cell, rate, protection, &dir, &mut phases));
    let _ = fs::remove_dir_all(&dir);
    let timing = format!(
        "{:.1} s: start {:.2}, bench {:.2}, stop {:.2}{}",
        clock.elapsed().as_secs_f64(),
        phases.start_s,
        phases.bench_s,
        phases.stop_s,
        phases.stop_note.as_deref().map(|n| format!(", {n}")).unwrap_or_default()
    );
    let line = match result {
        Ok(Some(bench)) => Line::Measured { run, cell: *cell, bench },
        Ok(None) => Line::Unsupported { run, cell: *cell },
        Err(message) => Line::Failure { run, cell: Some(*cell), message },
    };
    (line, timing)
}

/// Wall-clock seconds of a measurement's phases, for the progress lines (a
/// slow start or stop shows where a run's time goes).
#[derive(Clone, Debug, Default)]
struct Phases {
    start_s: f64,
    bench_s: f64,
    stop_s: f64,
    /// Set when the server had to be killed.
    stop_note: Option<String>,
}

fn measure_in(
    opts: &RunOptions,
    cell: &Cell,
    rate: Option<f64>,
    protection: Protection<'_>,
    dir: &Path,
    phases: &mut Phases,
) -> Result<Option<BenchOutput>, String> {
    if cell.tls != protection.tls.is_some() || cell.tokens != protection.tokens.is_some() {
        return Err(format!("{cell} started with {protection:?}"));
    }
    let clock = Instant::now();
    let mut server = start_with_retries(opts, cell, protection, dir)?;
    phases.start_s = clock.elapsed().as_secs_f64();
    let addr = server.addr(cell.system);
    let mut args: Vec<String> = vec![
        "run".into(),
        "--system".into(),
        cell.system.name().into(),
        "--addr".into(),
        addr.to_string(),
        "--scenario".into(),
        cell.scenario.name().into(),
        "--connections".into(),
        cell.connections.to_string(),
        "--pipeline".into(),
        cell.pipeline.to_string(),
        "--seconds".into(),
        opts.seconds.to_string(),
        "--warmup-seconds".into(),
        opts.warmup_seconds.to_string(),
        "--payload-bytes".into(),
        opts.payload_bytes.to_string(),
        "--queue".into(),
        QUEUE.into(),
        "--server-pid".into(),
        server.pid().to_string(),
    ];
    if let Some(batch) = cell.batch {
        args.extend(["--batch".into(), batch.to_string()]);
    }
    if let Some(rate) = rate {
        args.extend(["--rate".into(), format!("{:.0}", rate.max(1.0))]);
    }
    if let Some(files) = protection.tls {
        args.extend(["--tls-ca".into(), files.ca.display().to_string()]);
    }
    if let Some(tokens) = protection.tokens {
        args.extend(["--token".into(), tokens.token.clone()]);
    }
    let timeout = Duration::from_secs_f64(opts.seconds + opts.warmup_seconds) + BENCH_SLACK;
    let clock = Instant::now();
    let output = match cell.idle {
        None => client_command(opts, &args, |program, args| run_with_timeout(program, args, timeout))?,
        Some(idle) => {
            // A second load generator opens the idle connections first and
            // holds them, on the client's CPUs, until the measurement is over.
            let hold_args: Vec<String> = vec![
                "hold".into(),
                "--system".into(),
                cell.system.name().into(),
                "--addr".into(),
                addr.to_string(),
                "--connections".into(),
                idle.to_string(),
                "--seconds".into(),
                // Ended by a kill once measured; this only bounds a stuck run.
                HOLD_SECONDS_MAX.to_string(),
            ];
            let (hold, measured) = client_command(opts, &hold_args, |program, hold_args| {
                hold(program, hold_args, timeout + HOLD_OPEN_SLACK, HoldEnd::AfterMeasuring, |_| {
                    client_command(opts, &args, |program, args| run_with_timeout(program, args, timeout))
                })
            })?;
            measured
                .ok_or_else(|| format!("tqx-bench hold never held its {idle} connections: {}", hold.stderr_tail))??
        }
    };
    phases.bench_s = clock.elapsed().as_secs_f64();
    // A server that died under load fails the cell whatever the client says.
    if let Some(status) = server.exited() {
        return Err(format!(
            "{:?} exited during the measurement ({status}): {}",
            cell.system.server(),
            server.log_tail()
        ));
    }
    let clock = Instant::now();
    let stopped = server.stop();
    phases.stop_s = clock.elapsed().as_secs_f64();
    phases.stop_note.clone_from(&stopped);
    match output.status.code() {
        Some(0) => {}
        Some(3) => return Ok(None),
        _ => {
            return Err(format!(
                "tqx-bench {}: {}; stdout: {}; server log: {}",
                output.status,
                tail(&output.stderr),
                tail(&output.stdout),
                stopped.unwrap_or_default()
            ))
        }
    }
    let line =
        last_json_line(&output.stdout).ok_or_else(|| format!("tqx-bench printed no JSON: {:?}", output.stdout))?;
    let bench: BenchOutput = serde_json::from_str(line).map_err(|e| format!("tqx-bench output {line}: {e}"))?;
    Ok(Some(bench))
}

/// Calls `call(program, args)` with `tqx-bench ARGS` as the placement wants
/// it: on the client's CPUs (through `taskset`) when pinned apart.
fn client_command<T>(
    opts: &RunOptions,
    args: &[String],
    call: impl FnOnce(&Path, &[String]) -> Result<T, String>,
) -> Result<T, String> {
    match &opts.placement {
        Placement::Apart { client, .. } => {
            let mut pinned = vec!["-c".to_string(), cpu_list(client), opts.tqx_bench.display().to_string()];
            pinned.extend(args.iter().cloned());
            call(Path::new("taskset"), &pinned)
        }
        Placement::Shared => call(&opts.tqx_bench, args),
    }
}

/// Attempts at starting a server before the cell fails: a peer's port is
/// picked free and bound a moment later, so another process can take it in
/// between (rare, and a fresh port fixes it).
const SERVER_START_ATTEMPTS: u32 = 3;

fn start_with_retries(
    opts: &RunOptions,
    cell: &Cell,
    protection: Protection<'_>,
    dir: &Path,
) -> Result<ServerProcess, String> {
    let mut attempt = 1;
    loop {
        match ServerProcess::start(opts, cell.system.server(), cell.durability, protection, dir) {
            Ok(server) => return Ok(server),
            Err(e) if attempt < SERVER_START_ATTEMPTS => {
                eprintln!("bench: {cell}: start attempt {attempt} failed ({e}); trying again");
                let _ = fs::remove_dir_all(dir.join("data"));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A server started for one measurement (and by bench/tests/load_smoke.rs,
/// which drives the brokers the way `bench/run` starts them). Dropping it
/// kills it.
pub struct ServerProcess {
    process: Process,
    kind: Server,
    /// `tqx`: HTTP listener; others: their one listener.
    addr: SocketAddr,
    /// `tqx`: binary listener.
    binary: Option<SocketAddr>,
    log: PathBuf,
    /// Set when it serves over TLS: how its readiness probe connects.
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// `tqx` is started, waited for and stopped by the test kit (the one way
/// tests and benchmarks start it); the peers here.
enum Process {
    Tqx(Box<tqx_testkit::Tqx>),
    Peer(Child),
}

impl ServerProcess {
    /// Starts `kind` at `durability` with its data and log under `dir` (over
    /// TLS with `protection`'s certificate: TaskQueueX and Redis; with its
    /// tokens: TaskQueueX), and waits until it answers. `opts` gives the
    /// programs' paths.
    pub fn start(
        opts: &RunOptions,
        kind: Server,
        durability: Durability,
        protection: Protection<'_>,
        dir: &Path,
    ) -> Result<ServerProcess, String> {
        let tls = protection.tls;
        if tls.is_some() && !matches!(kind, Server::Tqx | Server::Redis) {
            return Err(format!("{kind:?} is not measured over TLS"));
        }
        if protection.tokens.is_some() && kind != Server::Tqx {
            return Err(format!("{kind:?} is not measured with tokens"));
        }
        let probe_tls = tls.map(|files| files.probe_config(kind)).transpose()?;
        let data = dir.join("data");
        fs::create_dir_all(&data).map_err(|e| format!("creating {}: {e}", data.display()))?;
        let log = dir.join("server.log");
        let log_file = || File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()));
        let log_append = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|e| format!("opening {}: {e}", log.display()))
        };
        let data_arg = data.display().to_string();
        let mut server = match kind {
            Server::RabbitMq => {
                let port = free_port()?;
                let dist_port = free_port()?;
                let config = dir.join("rabbitmq.conf");
                // Logs to the console (our log file) at `warning`; no plugins
                // (the management plugin alone adds seconds to each boot).
                let text = format!(
                    "listeners.tcp.default = 127.0.0.1:{port}\nloopback_users.guest = true\n\
                     log.console = true\nlog.console.level = warning\nlog.file = false\n"
                );
                fs::write(&config, text).map_err(|e| format!("writing {}: {e}", config.display()))?;
                let plugins = dir.join("enabled_plugins");
                fs::write(&plugins, "[].\n").map_err(|e| format!("writing {}: {e}", plugins.display()))?;
                let child = Command::new(&opts.rabbitmq_server)
                    // The script then `exec`s the Erlang VM: the child is the
                    // broker itself, whose CPU time `tqx-bench` reads.
                    .env("RUNNING_UNDER_SYSTEMD", "true")
                    .env("HOME", dir)
                    .env("RABBITMQ_NODENAME", format!("tqxbench{port}@localhost"))
                    .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
                    .env("RABBITMQ_NODE_PORT", port.to_string())
                    .env("RABBITMQ_DIST_PORT", dist_port.to_string())
                    // The quorum queue's Raft WAL and segments: on the disk under test.
                    .env("RABBITMQ_MNESIA_BASE", &data)
                    .env("RABBITMQ_LOG_BASE", dir.join("log"))
                    .env("RABBITMQ_CONFIG_FILE", &config)
                    .env("RABBITMQ_ENABLED_PLUGINS_FILE", &plugins)
                    .stdin(Stdio::null())
                    .stdout(log_file()?)
                    .stderr(log_append()?)
                    .spawn()
                    .map_err(|e| format!("starting {}: {e}", opts.rabbitmq_server.display()))?;
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                ServerProcess { process: Process::Peer(child), kind, addr, binary: None, log, tls: None }
            }
            Server::Nats => {
                let port = free_port()?;
                let config = dir.join("nats.conf");
                // `ping_interval`: the load generator answers the server's
                // PINGs only when it next writes (src/load/nats.rs).
                let text = format!(
                    "listen: \"127.0.0.1:{port}\"\nping_interval: \"10m\"\njetstream {{\n  store_dir: \"{}\"\n}}\n",
                    data.display()
                );
                fs::write(&config, text).map_err(|e| format!("writing {}: {e}", config.display()))?;
                let child = Command::new(&opts.nats_server)
                    .arg("-c")
                    .arg(&config)
                    .stdin(Stdio::null())
                    .stdout(log_file()?)
                    .stderr(log_append()?)
                    .spawn()
                    .map_err(|e| format!("starting {}: {e}", opts.nats_server.display()))?;
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                ServerProcess { process: Process::Peer(child), kind, addr, binary: None, log, tls: None }
            }
            Server::Tqx => {
                let mut launch = tqx_testkit::Launch::new(&opts.tqx, &data, &log);
                if let Some(files) = tls {
                    launch = launch.args([OsStr::new("--tls-cert"), files.cert.as_os_str()]);
                    launch = launch.args([OsStr::new("--tls-key"), files.key.as_os_str()]);
                }
                if let Some(tokens) = protection.tokens {
                    launch = launch.args([OsStr::new("--tokens"), tokens.path.as_os_str()]);
                }
                let tqx = launch
                    .args(["--durability", &durability.tqx_mode()])
                    // Per-connection logging would tax the connection storm;
                    // the peers log about as little at their defaults.
                    .args(["--log-level", "warn"])
                    .start(SERVER_START_TIMEOUT)
                    .map_err(|failure| format!("{failure}: {}", tail(&failure.log_since_start())))?;
                let (addr, binary) = (tqx.http, Some(tqx.binary));
                ServerProcess { process: Process::Tqx(Box::new(tqx)), kind, addr, binary, log: log.clone(), tls: None }
            }
            Server::Redis => {
                let port = free_port()?;
                let mut command = Command::new(&opts.redis_server);
                match tls {
                    None => command.args(["--port", &port.to_string()]),
                    // TLS only (`--port 0` closes the plain port); clients
                    // are not asked for certificates, as TaskQueueX without
                    // --tls-client-ca does not ask.
                    Some(files) => command
                        .args(["--port", "0", "--tls-port", &port.to_string()])
                        .arg("--tls-cert-file")
                        .arg(&files.cert)
                        .arg("--tls-key-file")
                        .arg(&files.key)
                        .arg("--tls-ca-cert-file")
                        .arg(&files.ca)
                        .args(["--tls-auth-clients", "no"]),
                };
                let child = command
                    .args(["--bind", "127.0.0.1", "--save", "", "--dir", &data_arg])
                    .args(["--daemonize", "no", "--logfile", ""])
                    // Its default of 10,000 clients would refuse some of the
                    // idle-connection cells' 10,050.
                    .args(["--maxclients", "20000"])
                    // The storm connects from 127.0.0.2 onwards (src/load), which
                    // protected mode refuses (it admits 127.0.0.1 and ::1 only);
                    // the server is bound to 127.0.0.1 all the same.
                    .args(["--protected-mode", "no"])
                    .args(durability.redis_args())
                    .stdin(Stdio::null())
                    .stdout(log_file()?)
                    .stderr(log_append()?)
                    .spawn()
                    .map_err(|e| format!("starting {}: {e}", opts.redis_server.display()))?;
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                ServerProcess { process: Process::Peer(child), kind, addr, binary: None, log, tls: None }
            }
            Server::Beanstalkd => {
                let port = free_port()?;
                let child = Command::new(&opts.beanstalkd)
                    .args(["-l", "127.0.0.1", "-p", &port.to_string()])
                    .args(durability.beanstalkd_args(&data_arg))
                    .stdin(Stdio::null())
                    .stdout(log_file()?)
                    .stderr(log_append()?)
                    .spawn()
                    .map_err(|e| format!("starting {}: {e}", opts.beanstalkd.display()))?;
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                ServerProcess { process: Process::Peer(child), kind, addr, binary: None, log, tls: None }
            }
        };
        server.tls = probe_tls;
        server.wait_ready()?;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        match &self.process {
            Process::Tqx(tqx) => tqx.pid(),
            Process::Peer(child) => child.id(),
        }
    }

    /// The address `tqx-bench` connects to for `system`.
    pub fn addr(&self, system: System) -> SocketAddr {
        match system {
            System::TqxBinary => self.binary.expect("a tqx server has a binary listener"),
            _ => self.addr,
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        // The kit's readiness probe speaks plain HTTP; over TLS, the probe below.
        if let (Process::Tqx(tqx), None) = (&self.process, &self.tls) {
            let remaining = deadline.saturating_duration_since(Instant::now());
            return match tqx.wait_ready(remaining) {
                Ok(_) => Ok(()),
                Err(what) => Err(format!("{:?} {what}: {}", self.kind, self.log_tail())),
            };
        }
        let (request, expect): (&[u8], &[u8]) = match self.kind {
            Server::Tqx => (b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", b"HTTP/1.1 200"),
            Server::Redis => (b"PING\r\n", b"+PONG"),
            // The broker's first method frame (`connection.start`, channel 0).
            Server::RabbitMq => (b"AMQP\x00\x00\x09\x01", b"\x01\x00\x00"),
            Server::Nats => (b"PING\r\n", b"INFO "),
            _ => (b"stats\r\n", b"OK "),
        };
        loop {
            if let Some(status) = self.exited() {
                return Err(format!("{:?} exited while starting ({status}): {}", self.kind, self.log_tail()));
            }
            if probe(self.addr, self.tls.as_ref(), request, expect) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{:?} not ready after {SERVER_START_TIMEOUT:?}: {}", self.kind, self.log_tail()));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        match &mut self.process {
            Process::Tqx(tqx) => tqx.try_wait(),
            Process::Peer(child) => child.try_wait().ok().flatten(),
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited in time. Returns the log's
    /// tail when the exit was not clean.
    fn stop(&mut self) -> Option<String> {
        let child = match &mut self.process {
            Process::Tqx(tqx) => return tqx.stop(SERVER_STOP_TIMEOUT).err(),
            Process::Peer(child) => child,
        };
        if self.kind == Server::RabbitMq {
            // Its data is thrown away; a graceful stop takes seconds.
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        if child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + SERVER_STOP_TIMEOUT;
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
                return Some(format!("did not stop on SIGTERM within {SERVER_STOP_TIMEOUT:?}; killed"));
            }
        }
        None
    }

    fn log_tail(&self) -> String {
        tail(&fs::read_to_string(&self.log).unwrap_or_default())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // The kit's `Tqx` kills itself when dropped.
        if let Process::Peer(child) = &mut self.process {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// One request on a fresh connection (TLS with `tls`); true if the reply
/// starts with `expect`.
fn probe(addr: SocketAddr, tls: Option<&Arc<rustls::ClientConfig>>, request: &[u8], expect: &[u8]) -> bool {
    let attempt = || -> io::Result<bool> {
        let socket = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        socket.set_write_timeout(Some(Duration::from_secs(2)))?;
        let mut stream: Box<dyn ReadWrite> = match tls {
            None => Box::new(socket),
            Some(config) => {
                let name = ServerName::try_from(crate::load::TLS_SERVER_NAME).map_err(io::Error::other)?;
                let session = rustls::ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
                Box::new(rustls::StreamOwned::new(session, socket))
            }
        };
        stream.write_all(request)?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 256];
        while reply.len() < expect.len() {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&chunk[..n]);
        }
        Ok(reply.starts_with(expect))
    };
    attempt().unwrap_or(false)
}

/// What a server is started with beyond its durability (and what
/// `tqx-bench` is given to match): TLS, tokens.
#[derive(Clone, Copy, Debug, Default)]
pub struct Protection<'a> {
    pub tls: Option<&'a TlsFiles>,
    pub tokens: Option<&'a TokenFile>,
}

/// The token file of a run's row with tokens on: made once per run with the
/// server's own command (`tqx token create --scope admin`), so the hash and
/// the file's format are the server's.
#[derive(Clone)]
pub struct TokenFile {
    /// `tqx serve --tokens`.
    pub path: PathBuf,
    /// `tqx-bench --token`: `tqx token create` printed it.
    pub token: String,
}

impl TokenFile {
    /// Runs `tqx token create` into `dir/tokens` (`dir` created).
    pub fn create(tqx: &Path, dir: &Path) -> Result<TokenFile, String> {
        fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let path = dir.join("tokens");
        let args: Vec<String> = ["token", "create", "--scope", "admin", "--name", "bench", "--file"]
            .iter()
            .map(|a| a.to_string())
            .chain([path.display().to_string()])
            .collect();
        let output = run_with_timeout(tqx, &args, Duration::from_secs(30))?;
        if !output.status.success() {
            return Err(format!("tqx token create: {}: {}", output.status, tail(&output.stderr)));
        }
        let token = output.stdout.trim().to_string();
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(format!("tqx token create printed {:?}, not one token", output.stdout));
        }
        Ok(TokenFile { path, token })
    }
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token itself stays out of logs and results.
        f.debug_struct("TokenFile").field("path", &self.path).finish_non_exhaustive()
    }
}

/// A probe's connection: plain or TLS (a probe is not on a measured path).
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// The throwaway certificate authority and server certificate of one run's
/// TLS cells (PEM files in a directory of the run's data root): made with
/// rcgen at the start of the run, valid for `localhost` and `127.0.0.1`,
/// ECDSA P-256 (rcgen's default key). Never committed, never reused.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The CA certificate: `tqx-bench --tls-ca`, Redis's `--tls-ca-cert-file`.
    pub ca: PathBuf,
    /// The server's certificate and key (`--tls-cert`/`--tls-key`,
    /// `--tls-cert-file`/`--tls-key-file`).
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Makes a CA and a server certificate signed by it in `dir` (created).
    pub fn generate(dir: &Path) -> Result<TlsFiles, String> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
        };
        let failed = |e: rcgen::Error| format!("making the benchmark's TLS certificate: {e}");
        fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "tqx benchmark CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().map_err(failed)?;
        let ca_cert = ca_params.self_signed(&ca_key).map_err(failed)?;
        let mut params =
            CertificateParams::new(vec![crate::load::TLS_SERVER_NAME.to_string(), "127.0.0.1".to_string()])
                .map_err(failed)?;
        params.distinguished_name.push(DnType::CommonName, "tqx benchmark server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().map_err(failed)?;
        let cert = params.signed_by(&key, &ca_cert, &ca_key).map_err(failed)?;
        let files = TlsFiles { ca: dir.join("ca.pem"), cert: dir.join("server.pem"), key: dir.join("server.key") };
        for (path, text) in [(&files.ca, ca_cert.pem()), (&files.cert, cert.pem()), (&files.key, key.serialize_pem())] {
            fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        Ok(files)
    }

    /// The readiness probe's client configuration for `kind` (the ALPN its
    /// clients offer: `http/1.1` to TaskQueueX's HTTP listener, none to Redis).
    fn probe_config(&self, kind: Server) -> Result<Arc<rustls::ClientConfig>, String> {
        let config = tqx_client::tls::client_config(&self.ca, None, tqx_client::tls::ALPN_HTTP)?;
        if kind == Server::Tqx {
            return Ok(config);
        }
        let mut config = Arc::unwrap_or_clone(config);
        config.alpn_protocols.clear();
        Ok(Arc::new(config))
    }
}

/// A loopback port free right now (bound and released: the server binds it a
/// moment later; a collision shows as a start failure).
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| format!("finding a free port: {e}"))
}

/// `/proc/loadavg`'s 1, 5 and 15 minute averages (empty if unreadable).
fn load_average() -> String {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// The machine, as (what, value) rows: what the figures depend on.
fn machine(opts: &RunOptions) -> Vec<(String, String)> {
    let unknown = || "unknown".to_string();
    let mut rows = Vec::new();
    let lscpu = command_line("lscpu", &[]).unwrap_or_default();
    let cpu =
        lscpu.lines().find_map(|l| l.strip_prefix("Model name:")).map(|m| m.trim().to_string()).unwrap_or_else(unknown);
    let hypervisor = lscpu.lines().find_map(|l| l.strip_prefix("Hypervisor vendor:")).map(|m| m.trim().to_string());
    rows.push(("cores".into(), command_line("nproc", &[]).unwrap_or_else(unknown)));
    rows.push((
        "CPU".into(),
        match hypervisor {
            Some(h) => format!("{cpu} (virtual machine, {h})"),
            None => cpu,
        },
    ));
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| format!("{:.1} GiB", kib / 1_048_576.0))
        .unwrap_or_else(unknown);
    rows.push(("memory".into(), memory));
    rows.push(("kernel".into(), command_line("uname", &["-sr"]).unwrap_or_else(unknown)));
    let os = fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(unknown);
    rows.push(("OS".into(), os));
    let root = opts.data_root.display().to_string();
    let df = command_line("df", &["--output=source,fstype,size", "-h", &root]).unwrap_or_default();
    let (device, fstype, size) = match df.lines().nth(1).map(|l| l.split_whitespace().collect::<Vec<_>>()) {
        Some(fields) if fields.len() >= 3 => (fields[0].to_string(), fields[1].to_string(), fields[2].to_string()),
        _ => (unknown(), unknown(), unknown()),
    };
    let lsblk = command_line("lsblk", &["-ndo", "TYPE,ROTA,MODEL", &device])
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let kind = fields.first().copied().unwrap_or("?");
            let rotational =
                if fields.get(1) == Some(&"1") { "rotational as the kernel reports it" } else { "non-rotational" };
            let model = fields.get(2..).map(|m| m.join(" ")).filter(|m| !m.is_empty());
            match model {
                Some(m) => format!(", {kind}, {rotational}, {m}"),
                None => format!(", {kind}, {rotational}"),
            }
        })
        .unwrap_or_default();
    rows.push(("disk (data directories)".into(), format!("{device} ({size}{lsblk}), {fstype}, under {root}")));
    let commit = command_line("git", &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(unknown);
    let dirty =
        command_line("git", &["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty()).unwrap_or(false);
    rows.push(("git commit".into(), if dirty { format!("{commit} (with uncommitted changes)") } else { commit }));
    let first_line =
        |text: Option<String>| text.and_then(|t| t.lines().next().map(str::to_string)).unwrap_or_else(unknown);
    let redis = opts.redis_server.display().to_string();
    let beanstalkd = opts.beanstalkd.display().to_string();
    rows.push(("Redis".into(), first_line(command_line(&redis, &["--version"]))));
    rows.push(("beanstalkd".into(), first_line(command_line(&beanstalkd, &["-v"]))));
    // The broker's version without booting it: Debian's package version.
    let rabbitmq = command_line("dpkg-query", &["-W", "-f", "${Version}", "rabbitmq-server"])
        .map(|v| format!("RabbitMQ {v} (Debian package)"))
        .unwrap_or_else(unknown);
    rows.push(("RabbitMQ".into(), rabbitmq));
    let nats = opts.nats_server.display().to_string();
    rows.push(("NATS".into(), first_line(command_line(&nats, &["--version"]))));
    rows.push(("placement".into(), opts.placement.describe()));
    rows.push(("rustc".into(), first_line(command_line("rustc", &["--version"]))));
    rows
}

/// Where servers and the load generator run (issue 17, item 5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Servers on `server`, `tqx-bench` on `client` (CPU numbers).
    Apart { server: Vec<usize>, client: Vec<usize> },
    /// No pinning: the scheduler shares every allowed CPU among them.
    Shared,
}

impl Placement {
    /// Apart when at least two CPUs are allowed: the last allowed CPU for the
    /// load generator (one thread), all the others for the server.
    pub fn apart(allowed: &[usize]) -> Placement {
        match allowed.split_last() {
            Some((client, server)) if !server.is_empty() => {
                Placement::Apart { server: server.to_vec(), client: vec![*client] }
            }
            _ => Placement::Shared,
        }
    }

    /// What the report and the progress lines say.
    pub fn describe(&self) -> String {
        match self {
            Placement::Apart { server, client } => format!(
                "pinned apart: every server on CPU {} (inherited affinity), tqx-bench on CPU {} (`taskset -c {}`)",
                cpu_list(server),
                cpu_list(client),
                cpu_list(client)
            ),
            Placement::Shared => "shared: servers and tqx-bench unpinned, on the same CPUs".to_string(),
        }
    }
}

/// `0,2,3`: the form `taskset -c` takes.
fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",")
}

/// The CPUs this process may run on (its affinity mask, which `taskset` and
/// cgroup cpusets narrow).
pub fn allowed_cpus() -> Result<Vec<usize>, String> {
    // SAFETY: `set` is a plain bit set that sched_getaffinity fills; its size is passed.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this thread; the pointer and size describe `set`.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(format!("sched_getaffinity: {}", io::Error::last_os_error()));
    }
    // SAFETY: CPU_ISSET reads a bit of the initialised `set`.
    Ok((0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect())
}

/// Pins the calling thread (and so every process it starts) to `cpus`.
fn set_own_affinity(cpus: &[usize]) -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: CPU_SET writes one bit of `set`; cpu is below CPU_SETSIZE (it came from allowed_cpus).
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: pid 0 is this thread; the pointer and size describe `set`.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(format!("pinning to CPUs {}: {}", cpu_list(cpus), io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apart_gives_the_client_the_last_allowed_cpu() {
        assert_eq!(Placement::apart(&[0, 1]), Placement::Apart { server: vec![0], client: vec![1] });
        assert_eq!(Placement::apart(&[2, 5, 7]), Placement::Apart { server: vec![2, 5], client: vec![7] });
        assert_eq!(Placement::apart(&[3]), Placement::Shared);
        assert_eq!(Placement::apart(&[]), Placement::Shared);
        assert!(Placement::apart(&[0, 1]).describe().contains("`taskset -c 1`"));
    }
}
