//! `tqx-bench`: the load generator (docs/bench-harness.md).
//!
//! - `tqx-bench run --system S --addr HOST:PORT --scenario SC [options]` prints
//!   one JSON line with the figures; exit 0, or 1 if the system answered errors
//!   for more than 1 % of ops (or nothing was measured, or the setup failed),
//!   2 if it cannot connect, 3 (with `{"unsupported":true,...}`) if the system
//!   cannot run the scenario, 64 on bad arguments.
//! - `tqx-bench fsync --dir DIR` prints the disk's `pwrite` + `fdatasync` time.
//! - `tqx-bench preload --system S --addr A --tasks N` fills a queue.
//! - `tqx-bench hold --system S --addr A --connections N --seconds S
//!   [--rate-per-conn R]` holds N connections open, idle or each sending R
//!   enqueues/s; prints `holding N connections` on stderr once all are open.
//!
//! `run`, `preload` and `hold` take `--tls-ca PEM` (every connection TLS) and
//! `--token TOKEN` (TaskQueueX's API token) for servers that require them.
//!
//! At start it raises its own open-file limit (RLIMIT_NOFILE): 10,000
//! connections need more descriptors than the usual soft limit of 1,024.
//!
//! Logs go to stderr; stdout holds only the JSON line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tqx_bench::load::{self, HoldConfig, PreloadConfig, RunConfig, RunError, Scenario, Security, System};

// Bad arguments exit with EX_USAGE (64), distinct from 2 ("cannot connect"),
// which clap would otherwise use.
use tqx_bench::shared::EXIT_USAGE;
const EXIT_UNSUPPORTED: u8 = 3;
const EXIT_CONNECT: u8 = 2;
const EXIT_FAILED: u8 = 1;
/// Error replies tolerated, as a fraction of ops.
const ERROR_RATIO_MAX: f64 = 0.01;

#[derive(Parser, Debug)]
#[command(name = "tqx-bench", about = "Load generator for TaskQueueX, Redis and beanstalkd (docs/bench-harness.md)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// TLS and token options of `run`, `preload` and `hold`.
#[derive(Args, Debug)]
struct SecurityArgs {
    /// Connect with TLS, trusting the CA certificates in this PEM file (SNI `localhost`; ALPN tqx/1 on
    /// tqx-binary, http/1.1 on tqx-http, none on the others).
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// TaskQueueX API token: an `auth` after `hello` (binary), `Authorization: Bearer` (HTTP).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
}

impl SecurityArgs {
    fn into_security(self) -> Security {
        Security { tls_ca: self.tls_ca, token: self.token }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one scenario against one system; print one JSON line.
    Run {
        /// tqx-binary, tqx-http, redis, redis-reliable or beanstalkd.
        #[arg(long)]
        system: String,
        /// The server, HOST:PORT.
        #[arg(long)]
        addr: String,
        /// enqueue, cycle, batch, status, deps, storm or latency.
        #[arg(long)]
        scenario: String,
        /// Connections (storm: concurrent connect loops).
        #[arg(long, default_value_t = 50)]
        connections: usize,
        /// Requests in flight per connection (closed loop).
        #[arg(long, default_value_t = 1)]
        pipeline: usize,
        /// Measured seconds (after the warmup).
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Seconds run first and not counted.
        #[arg(long, default_value_t = 1.0)]
        warmup_seconds: f64,
        /// Latency scenario: offered load, requests/s over all connections (open loop).
        #[arg(long)]
        rate: Option<f64>,
        /// Tasks per request in the batch scenario.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Bytes of payload per task.
        #[arg(long, default_value_t = 100)]
        payload_bytes: usize,
        /// Queue (Redis list, beanstalkd tube).
        #[arg(long, default_value = "bench")]
        queue: String,
        /// The server's process id (same machine): report its CPU use over the window as `server_cpu`.
        #[arg(long)]
        server_pid: Option<u32>,
        #[command(flatten)]
        security: SecurityArgs,
    },
    /// Measure pwrite + fdatasync on a preallocated file in DIR.
    Fsync {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        #[arg(long, default_value_t = 4096)]
        bytes: usize,
        /// Start each sample this long after the previous one started (0: back to back).
        #[arg(long, default_value_t = 0)]
        interval_us: u64,
    },
    /// Enqueue N tasks (batches where the system has them).
    Preload {
        #[arg(long)]
        system: String,
        #[arg(long)]
        addr: String,
        #[arg(long)]
        tasks: usize,
        #[arg(long, default_value_t = 100)]
        payload_bytes: usize,
        #[arg(long, default_value = "bench")]
        queue: String,
        #[command(flatten)]
        security: SecurityArgs,
    },
    /// Hold N connections open (handshakes done) for S seconds, idle or each
    /// sending enqueues; print one JSON line.
    Hold {
        /// tqx-binary or tqx-http (any system `run` knows works).
        #[arg(long)]
        system: String,
        #[arg(long)]
        addr: String,
        #[arg(long)]
        connections: usize,
        /// Seconds held after all are open.
        #[arg(long)]
        seconds: f64,
        /// Enqueues per second on each connection (open loop); idle without it.
        #[arg(long)]
        rate_per_conn: Option<f64>,
        #[arg(long, default_value_t = 100)]
        payload_bytes: usize,
        #[arg(long, default_value = "bench")]
        queue: String,
        #[command(flatten)]
        security: SecurityArgs,
    },
}

fn parse_system(name: &str) -> Result<System, RunError> {
    System::parse(name).ok_or_else(|| {
        let names: Vec<&str> = System::ALL.iter().map(|s| s.name()).collect();
        RunError::Usage(format!("unknown system {name:?} (one of {})", names.join(", ")))
    })
}

fn parse_scenario(name: &str) -> Result<Scenario, RunError> {
    Scenario::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        RunError::Usage(format!("unknown scenario {name:?} (one of {})", names.join(", ")))
    })
}

fn print_json(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string(value).expect("reports serialize"));
}

fn exit_for(error: &RunError) -> ExitCode {
    eprintln!("tqx-bench: {error}");
    ExitCode::from(match error {
        RunError::Usage(_) => EXIT_USAGE,
        RunError::Unsupported(_) => EXIT_UNSUPPORTED,
        RunError::Connect(_) => EXIT_CONNECT,
        RunError::Failed(_) => EXIT_FAILED,
    })
}

fn run(config: RunConfig) -> ExitCode {
    eprintln!(
        "tqx-bench: {} {} at {}: {} connections, pipeline {}, {} s after {} s of warmup",
        config.system.name(),
        config.scenario.name(),
        config.addr,
        config.connections,
        config.pipeline,
        config.seconds,
        config.warmup_seconds
    );
    match load::run(&config) {
        Ok(report) => {
            print_json(&report);
            if report.ops == 0 {
                eprintln!("tqx-bench: no op completed in the measured window");
                return ExitCode::from(EXIT_FAILED);
            }
            if report.errors as f64 > ERROR_RATIO_MAX * report.ops as f64 {
                eprintln!("tqx-bench: {} errors for {} ops (over 1 %)", report.errors, report.ops);
                return ExitCode::from(EXIT_FAILED);
            }
            ExitCode::SUCCESS
        }
        Err(RunError::Unsupported(reason)) => {
            print_json(&serde_json::json!({
                "unsupported": true,
                "system": config.system.name(),
                "scenario": config.scenario.name(),
                "reason": reason,
            }));
            exit_for(&RunError::Unsupported(reason))
        }
        Err(e) => exit_for(&e),
    }
}

fn main() -> ExitCode {
    let cli: Cli = match tqx_bench::shared::parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    // One process holds up to 10,000+ connections (two descriptors each when
    // sending on the open loop). Not fatal: small runs work without it.
    match load::fdlimit::raise_nofile(load::fdlimit::NOFILE_WANTED) {
        Ok(limit) if limit < load::fdlimit::NOFILE_WANTED => {
            eprintln!("tqx-bench: open-file limit {limit} (wanted {})", load::fdlimit::NOFILE_WANTED)
        }
        Ok(_) => {}
        Err(e) => eprintln!("tqx-bench: cannot raise the open-file limit: {e}"),
    }
    match cli.command {
        Command::Run {
            system,
            addr,
            scenario,
            connections,
            pipeline,
            seconds,
            warmup_seconds,
            rate,
            batch,
            payload_bytes,
            queue,
            server_pid,
            security,
        } => {
            let (system, scenario) = match (parse_system(&system), parse_scenario(&scenario)) {
                (Ok(system), Ok(scenario)) => (system, scenario),
                (Err(e), _) | (_, Err(e)) => return exit_for(&e),
            };
            run(RunConfig {
                system,
                addr,
                scenario,
                connections,
                pipeline,
                seconds,
                warmup_seconds,
                rate,
                batch,
                payload_bytes,
                queue,
                server_pid,
                security: security.into_security(),
            })
        }
        Command::Fsync { dir, count, bytes, interval_us } => {
            match load::fsync::measure(&dir, count, bytes, interval_us) {
                Ok(report) => {
                    print_json(&report);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tqx-bench: fsync in {}: {e}", dir.display());
                    ExitCode::from(EXIT_FAILED)
                }
            }
        }
        Command::Preload { system, addr, tasks, payload_bytes, queue, security } => {
            let system = match parse_system(&system) {
                Ok(system) => system,
                Err(e) => return exit_for(&e),
            };
            match load::preload(&PreloadConfig {
                system,
                addr,
                tasks,
                payload_bytes,
                queue,
                security: security.into_security(),
            }) {
                Ok(report) => {
                    print_json(&report);
                    ExitCode::SUCCESS
                }
                Err(e) => exit_for(&e),
            }
        }
        Command::Hold { system, addr, connections, seconds, rate_per_conn, payload_bytes, queue, security } => {
            let system = match parse_system(&system) {
                Ok(system) => system,
                Err(e) => return exit_for(&e),
            };
            hold(HoldConfig {
                system,
                addr,
                connections,
                seconds,
                rate_per_conn,
                payload_bytes,
                queue,
                security: security.into_security(),
            })
        }
    }
}

fn hold(config: HoldConfig) -> ExitCode {
    eprintln!(
        "tqx-bench: hold {} connections to {} at {} for {} s, {}",
        config.connections,
        config.system.name(),
        config.addr,
        config.seconds,
        match config.rate_per_conn {
            Some(rate) => format!("{rate} enqueue(s)/s each"),
            None => "idle".into(),
        }
    );
    match load::hold(&config) {
        Ok(report) => {
            print_json(&report);
            // The JSON line is printed either way: a partial hold is still a
            // measurement of where the server stopped accepting.
            if report.opened < report.connections {
                eprintln!("tqx-bench: opened {} of {} connections", report.opened, report.connections);
                return ExitCode::from(EXIT_FAILED);
            }
            if report.errors as f64 > ERROR_RATIO_MAX * report.ops.max(1) as f64 {
                eprintln!("tqx-bench: {} errors for {} ops (over 1 %)", report.errors, report.ops);
                return ExitCode::from(EXIT_FAILED);
            }
            ExitCode::SUCCESS
        }
        Err(e) => exit_for(&e),
    }
}
