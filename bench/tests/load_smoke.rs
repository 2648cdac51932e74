//! Drives `tqx-bench run` against the real servers: `tqx serve` (memory mode),
//! and `redis-server` and `beanstalkd` when installed (Debian packages
//! `redis-server`, `beanstalkd`), RabbitMQ and NATS JetStream (Debian packages
//! `rabbitmq-server`, `nats-server`, which `bench/run` installs). Every
//! scenario each system supports runs for half a second and must measure ops
//! without errors; every combination it does not support must say so (exit 3).
//! Speed is not asserted.
//!
//! `tqx` is found through `TQX_BIN`, else `$CARGO_TARGET_DIR/release/tqx`, else
//! next to this test's own target directory; a server that is not found is
//! skipped with a message on stderr, as are Redis and beanstalkd when missing.
//! RabbitMQ and NATS are not skipped: their drivers are this crate's own AMQP
//! and NATS codecs, which only a real broker proves, so a missing broker fails
//! the test (install them as `bench/run` does). They are started the way
//! `bench/run` starts them (`tqx_bench::report::run::ServerProcess`).
//!
//! TLS (issue 18): `tqx serve` and `redis-server --tls-port`, started by
//! `ServerProcess` with the run's throwaway certificate as `bench/run` starts
//! them for its TLS cells, driven through `tqx-bench --tls-ca` (and
//! `--token` against a server with `--tokens`). These are not skipped: `tqx`
//! is built by the workspace's tests and Redis installed by tools/env.sh, and
//! only a real TLS server proves the path.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tqx_bench::report::model::{Durability, Server as Kind, System};
use tqx_bench::report::run::{Placement, Protection, RunOptions, ServerProcess, TlsFiles, TokenFile};

const SCENARIOS: [&str; 7] = ["enqueue", "cycle", "batch", "status", "deps", "storm", "latency"];
/// How long a started server gets to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A server process, killed when the test ends however it ends.
struct Server {
    child: Child,
    name: &'static str,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tqx_bench() -> &'static str {
    env!("CARGO_BIN_EXE_tqx-bench")
}

fn find_tqx() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TQX_BIN") {
        return Some(PathBuf::from(path));
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let path = Path::new(&dir).join("release").join("tqx");
        if path.is_file() {
            return Some(path);
        }
    }
    // target/release/deps/load_smoke-HASH -> target/release/tqx
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("tqx");
    path.is_file().then_some(path)
}

fn installed(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(server: &mut Server, addr: &str) {
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect(addr).is_err() {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("{} exited with {status} before listening on {addr}", server.name);
        }
        assert!(Instant::now() < deadline, "{} does not listen on {addr}", server.name);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `tqx serve` in memory mode in `dir` (data and log, removed with
/// it), ready; returns it with its binary and HTTP addresses.
fn start_tqx(tqx: &Path, dir: &tqx_testkit::TempDir) -> (tqx_testkit::Tqx, String, String) {
    let server = tqx_testkit::Launch::new(tqx, dir.path().join("data"), dir.path().join("stderr.log"))
        .args(["--durability", "memory"])
        .start(START_TIMEOUT)
        .unwrap_or_else(|failure| panic!("cannot start {}: {failure}\n{}", tqx.display(), failure.log_since_start()));
    if let Err(what) = server.wait_ready(START_TIMEOUT) {
        panic!("tqx serve {what}\n{}", server.log_text());
    }
    let (binary, http) = (server.binary.to_string(), server.http.to_string());
    (server, binary, http)
}

fn start_redis() -> (Server, String) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        // The storm connects from 127.0.0.2 onwards, which protected mode refuses.
        .args(["--protected-mode", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let mut server = Server { child, name: "redis-server" };
    let addr = format!("127.0.0.1:{port}");
    wait_for_port(&mut server, &addr);
    (server, addr)
}

fn start_beanstalkd() -> (Server, String) {
    let port = free_port();
    let child = Command::new("beanstalkd")
        .args(["-l", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start beanstalkd");
    let mut server = Server { child, name: "beanstalkd" };
    let addr = format!("127.0.0.1:{port}");
    wait_for_port(&mut server, &addr);
    (server, addr)
}

/// Runs `tqx-bench ARGS`; returns its exit status and its one JSON line.
fn bench(args: &[&str]) -> (i32, Value) {
    let output = Command::new(tqx_bench()).args(args).output().expect("run tqx-bench");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line on stdout for {args:?}; stdout {stdout:?}, stderr {stderr}");
    let json = serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {}", lines[0]));
    (output.status.code().expect("exited"), json)
}

/// Every scenario against `system` at `addr`: supported ones measure ops
/// without errors, the others exit 3.
fn every_scenario(system: &str, addr: &str, unsupported: &[&str]) {
    for scenario in SCENARIOS {
        let queue = format!("smoke-{scenario}");
        let mut args = vec![
            "run",
            "--system",
            system,
            "--addr",
            addr,
            "--scenario",
            scenario,
            "--connections",
            "8",
            "--seconds",
            "0.5",
            "--warmup-seconds",
            "0.1",
            "--queue",
            &queue,
        ];
        if scenario == "latency" {
            args.extend(["--rate", "2000"]);
        }
        if scenario == "enqueue" {
            args.extend(["--pipeline", "4"]);
        }
        let (status, json) = bench(&args);
        if unsupported.contains(&scenario) {
            assert_eq!(status, 3, "{system} {scenario}: {json}");
            assert_eq!(json["unsupported"], true, "{system} {scenario}: {json}");
            continue;
        }
        eprintln!("{json}");
        assert_eq!(status, 0, "{system} {scenario}: {json}");
        assert_eq!(json["system"], system);
        assert_eq!(json["scenario"], scenario);
        assert!(json["ops"].as_u64().unwrap() > 0, "{system} {scenario}: {json}");
        assert_eq!(json["errors"], 0, "{system} {scenario}: {json}");
        assert!(json["latency_us"]["p50"].as_f64().unwrap() > 0.0, "{system} {scenario}: {json}");
        let tasks_per_s = json["tasks_per_s"].as_f64().unwrap();
        let ops_per_s = json["ops_per_s"].as_f64().unwrap();
        match scenario {
            "batch" => assert!((tasks_per_s - 100.0 * ops_per_s).abs() < 1.0, "{json}"),
            // Each DAG completes 12 tasks, but the window cuts some DAGs.
            "deps" => assert!(tasks_per_s > ops_per_s, "{json}"),
            _ => assert_eq!(tasks_per_s, ops_per_s, "{json}"),
        }
        if scenario == "latency" {
            assert_eq!(json["offered_rate"], 2000.0);
        } else {
            assert_eq!(json["offered_rate"], Value::Null);
        }
    }
    // The open loop of the batch and the lookups (bench/run's `50 % of peak` rows).
    for scenario in ["batch", "status"].into_iter().filter(|s| !unsupported.contains(s)) {
        let queue = format!("smoke-open-{scenario}");
        let args = [
            "run",
            "--system",
            system,
            "--addr",
            addr,
            "--scenario",
            scenario,
            "--connections",
            "8",
            "--seconds",
            "0.5",
            "--warmup-seconds",
            "0.1",
            "--queue",
            &queue,
            "--rate",
            "500",
        ];
        let (status, json) = bench(&args);
        assert_eq!(status, 0, "{system} {scenario} open loop: {json}");
        assert!(json["ops"].as_u64().unwrap() > 0, "{json}");
        assert_eq!(json["errors"], 0, "{json}");
        assert_eq!(json["offered_rate"], 500.0, "{json}");
    }
}

#[test]
fn tqx_binary_and_http_run_every_scenario() {
    let Some(tqx) = find_tqx() else {
        eprintln!("SKIPPED: no tqx binary (set TQX_BIN, or build it: cargo build --release -p taskqueuex --bin tqx)");
        return;
    };
    let dir = tqx_testkit::TempDir::create(tqx_testkit::fresh_path("tqx-load-smoke")).expect("a temp directory");
    let (server, binary, http) = start_tqx(&tqx, &dir);
    every_scenario("tqx-binary", &binary, &[]);
    every_scenario("tqx-http", &http, &[]);
    let (status, json) = bench(&["preload", "--system", "tqx-binary", "--addr", &binary, "--tasks", "2500"]);
    assert_eq!((status, json["preloaded"].as_u64()), (0, Some(2500)), "{json}");
    drop(server);
}

#[test]
fn redis_runs_every_scenario_it_can() {
    if !installed("redis-server") {
        eprintln!("SKIPPED: redis-server is not installed (apt-get install -y redis-server)");
        return;
    }
    let (_server, addr) = start_redis();
    every_scenario("redis", &addr, &["deps"]);
    every_scenario("redis-reliable", &addr, &["deps"]);
}

#[test]
fn beanstalkd_runs_every_scenario_it_can() {
    if !installed("beanstalkd") {
        eprintln!("SKIPPED: beanstalkd is not installed (apt-get install -y beanstalkd)");
        return;
    }
    let (_server, addr) = start_beanstalkd();
    every_scenario("beanstalkd", &addr, &["batch", "deps"]);
    let (status, json) = bench(&["preload", "--system", "beanstalkd", "--addr", &addr, "--tasks", "100"]);
    assert_eq!((status, json["preloaded"].as_u64()), (0, Some(100)), "{json}");
}

#[test]
fn a_server_that_is_not_there_is_exit_2() {
    let addr = format!("127.0.0.1:{}", free_port());
    let output = Command::new(tqx_bench())
        .args(["run", "--system", "redis", "--addr", &addr, "--scenario", "enqueue", "--seconds", "0.1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout.is_empty());
}

#[test]
fn bad_arguments_are_exit_64() {
    for args in [
        &["run", "--system", "nope", "--addr", "127.0.0.1:1", "--scenario", "enqueue"][..],
        &["run", "--system", "redis", "--addr", "127.0.0.1:1", "--scenario", "latency"],
        &["run", "--system", "redis", "--addr", "127.0.0.1:1", "--scenario", "enqueue", "--pipeline", "0"],
        &["run", "--system", "redis"],
    ] {
        let status = Command::new(tqx_bench()).args(args).stderr(Stdio::null()).status().unwrap();
        assert_eq!(status.code(), Some(64), "{args:?}");
    }
}

#[test]
fn fsync_prints_the_disk_sync_time() {
    let dir = std::env::temp_dir();
    let (status, json) = bench(&["fsync", "--dir", dir.to_str().unwrap(), "--count", "20"]);
    assert_eq!(status, 0);
    for key in ["p50", "p99", "mean"] {
        assert!(json["fdatasync_us"][key].as_f64().unwrap() > 0.0, "{json}");
    }
}

/// Installed, or the test fails: these drivers are proved only against a real broker.
fn require(program: &str, package: &str) {
    assert!(
        installed(program),
        "{program} is not installed: apt-get install -y {package} (bench/run installs it); the {package} driver \
         of tqx-bench is tested only against a real broker"
    );
}

/// Starts `kind` as `bench/run` does (`sync`, data under /var/tmp), in `dir`.
fn start_broker(kind: Kind, dir: &tqx_testkit::TempDir) -> ServerProcess {
    let opts = run_options(dir, PathBuf::from("tqx"));
    ServerProcess::start(&opts, kind, Durability::Sync, Protection::default(), dir.path())
        .unwrap_or_else(|e| panic!("starting {kind:?}: {e}"))
}

/// `bench/run`'s options for servers started by [`ServerProcess`] in `dir`.
fn run_options(dir: &tqx_testkit::TempDir, tqx: PathBuf) -> RunOptions {
    RunOptions {
        quick: true,
        runs: 1,
        seconds: 0.5,
        warmup_seconds: 0.1,
        payload_bytes: 100,
        only: None,
        tqx,
        tqx_bench: PathBuf::from(tqx_bench()),
        redis_server: PathBuf::from("redis-server"),
        beanstalkd: PathBuf::from("beanstalkd"),
        rabbitmq_server: PathBuf::from(RABBITMQ_SERVER),
        nats_server: PathBuf::from("nats-server"),
        placement: Placement::Shared,
        data_root: dir.path().to_path_buf(),
        results: dir.path().join("results.jsonl"),
        command: String::new(),
    }
}

const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// The scenarios the brokers run, closed loop and open loop: ops without
/// errors, and the server's CPU per op reported.
fn broker_scenarios(system: &str, addr: &str, pid: u32) {
    every_scenario(system, addr, &["batch", "status", "deps", "storm"]);
    let pid = pid.to_string();
    for (scenario, extra) in
        [("enqueue", &["--pipeline", "8"][..]), ("cycle", &["--rate", "400"]), ("enqueue", &["--rate", "400"])]
    {
        let queue = format!("smoke-open-{scenario}-{}", extra[1]);
        let mut args = vec![
            "run",
            "--system",
            system,
            "--addr",
            addr,
            "--scenario",
            scenario,
            "--connections",
            "8",
            "--seconds",
            "0.5",
            "--warmup-seconds",
            "0.1",
            "--queue",
            &queue,
            "--server-pid",
            &pid,
        ];
        args.extend(extra);
        let (status, json) = bench(&args);
        eprintln!("{json}");
        assert_eq!(status, 0, "{system} {scenario} {extra:?}: {json}");
        assert!(json["ops"].as_u64().unwrap() > 0, "{json}");
        assert_eq!(json["errors"], 0, "{json}");
        assert!(json["server_cpu"].as_f64().unwrap() > 0.0, "{json}");
        if extra[0] == "--rate" {
            assert_eq!(json["offered_rate"], 400.0, "{json}");
            // The open loop offers 400/s for 0.5 s: no more can complete
            // than were offered plus the warmup's.
            assert!(json["ops"].as_u64().unwrap() <= 400, "{json}");
        }
    }
}

#[test]
fn rabbitmq_quorum_queue_runs_enqueue_and_cycle_closed_and_open_loop() {
    require(RABBITMQ_SERVER, "rabbitmq-server");
    let dir =
        tqx_testkit::TempDir::create(tqx_testkit::fresh_path("tqx-load-smoke-rabbitmq")).expect("a temp directory");
    let server = start_broker(Kind::RabbitMq, &dir);
    broker_scenarios("rabbitmq", &server.addr(System::RabbitMq).to_string(), server.pid());
}

#[test]
fn nats_jetstream_runs_enqueue_and_cycle_closed_and_open_loop() {
    require("nats-server", "nats-server");
    let dir = tqx_testkit::TempDir::create(tqx_testkit::fresh_path("tqx-load-smoke-nats")).expect("a temp directory");
    let server = start_broker(Kind::Nats, &dir);
    broker_scenarios("nats", &server.addr(System::Nats).to_string(), server.pid());
}

// ---- TLS (issue 18) -----------------------------------------------------------------

/// `tqx-bench run` over TLS for a fraction of a second: replies counted, no
/// errors, the server's CPU read.
fn tls_run(system: &str, addr: &str, scenario: &str, pipeline: &str, ca: &Path, pid: u32, token: Option<&str>) {
    let (queue, pid) = (format!("smoke-tls-{scenario}-{pipeline}"), pid.to_string());
    let mut args = vec![
        "run",
        "--system",
        system,
        "--addr",
        addr,
        "--scenario",
        scenario,
        "--connections",
        "4",
        "--pipeline",
        pipeline,
        "--seconds",
        "0.3",
        "--warmup-seconds",
        "0.1",
        "--queue",
        &queue,
        "--server-pid",
        &pid,
        "--tls-ca",
        ca.to_str().unwrap(),
    ];
    if let Some(token) = token {
        args.extend(["--token", token]);
    }
    let (status, json) = bench(&args);
    eprintln!("{json}");
    assert_eq!(status, 0, "{system} {scenario} over TLS: {json}");
    assert!(json["ops"].as_u64().unwrap() > 0, "{system} {scenario} over TLS: {json}");
    assert_eq!(json["errors"], 0, "{system} {scenario} over TLS: {json}");
    assert!(json["server_cpu"].as_f64().unwrap() > 0.0, "{json}");
}

fn required_tqx() -> PathBuf {
    find_tqx().expect("no tqx binary: set TQX_BIN, or build it (cargo build --release -p taskqueuex --bin tqx)")
}

#[test]
fn tls_cells_drive_tqx_binary_http_and_redis_through_tls() {
    let tqx = required_tqx();
    require("redis-server", "redis-server");
    let dir = tqx_testkit::TempDir::create(tqx_testkit::fresh_path("tqx-load-smoke-tls")).expect("a temp directory");
    let files = TlsFiles::generate(&dir.path().join("tls")).expect("the run's certificate");
    let opts = run_options(&dir, tqx);
    for (kind, systems) in [(Kind::Tqx, &["tqx-binary", "tqx-http"][..]), (Kind::Redis, &["redis"])] {
        let server_dir = dir.path().join(format!("{kind:?}"));
        std::fs::create_dir_all(&server_dir).unwrap();
        // Started and probed over TLS as bench/run starts a TLS cell's server.
        let protection = Protection { tls: Some(&files), tokens: None };
        let server = ServerProcess::start(&opts, kind, Durability::Memory, protection, &server_dir)
            .unwrap_or_else(|e| panic!("starting {kind:?} with TLS: {e}"));
        for system in systems {
            let addr = server.addr(System::parse(system).unwrap()).to_string();
            tls_run(system, &addr, "enqueue", "4", &files.ca, server.pid(), None);
            tls_run(system, &addr, "cycle", "1", &files.ca, server.pid(), None);
            // The same server without TLS on the client: refused, not measured.
            let output = Command::new(tqx_bench())
                .args(["run", "--system", system, "--addr", &addr, "--scenario", "enqueue", "--seconds", "0.2"])
                .output()
                .unwrap();
            assert_ne!(output.status.code(), Some(0), "{system}: plain text to a TLS port measured something");
        }
    }
}

#[test]
fn a_token_goes_over_tls_on_both_protocols_and_a_wrong_one_fails_the_run() {
    let tqx = required_tqx();
    let dir = tqx_testkit::TempDir::create(tqx_testkit::fresh_path("tqx-load-smoke-token")).expect("a temp directory");
    let files = TlsFiles::generate(&dir.path().join("tls")).expect("the run's certificate");
    // Made and started as bench/run does for its row with tokens on.
    let tokens = TokenFile::create(&tqx, &dir.path().join("tokens")).expect("tqx token create");
    let token = tokens.token.clone();
    let opts = run_options(&dir, tqx);
    let server_dir = dir.path().join("server");
    std::fs::create_dir_all(&server_dir).unwrap();
    let protection = Protection { tls: Some(&files), tokens: Some(&tokens) };
    let server = ServerProcess::start(&opts, Kind::Tqx, Durability::Memory, protection, &server_dir)
        .unwrap_or_else(|e| panic!("starting tqx with TLS and tokens: {e}"));
    for system in ["tqx-binary", "tqx-http"] {
        let addr = server.addr(System::parse(system).unwrap()).to_string();
        tls_run(system, &addr, "cycle", "2", &files.ca, server.pid(), Some(&token));
        for wrong in [None, Some("tqx_not-a-token")] {
            let mut args =
                vec!["run", "--system", system, "--addr", &addr, "--scenario", "enqueue", "--seconds", "0.2"];
            args.extend(["--tls-ca", files.ca.to_str().unwrap()]);
            if let Some(wrong) = wrong {
                args.extend(["--token", wrong]);
            }
            let output = Command::new(tqx_bench()).args(&args).output().unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(1), "{system} with token {wrong:?}: {stderr}");
            assert!(stderr.contains("unauthenticated") || stderr.contains("401"), "{system}: {stderr}");
        }
    }
}
