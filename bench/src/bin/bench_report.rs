//! `bench-report`: measures (`run`) and reports (`render`); `bench/run` calls
//! both. See `tqx_bench::report` for how, and docs/benchmarks.md for what.
//!
//! ```text
//! bench-report run --results FILE [--quick] [--runs N] [--seconds S] [--warmup-seconds W] [--only LIST] ...
//! bench-report render --results FILE --out FILE.md --plots DIR [--intro FILE] [--changelog FILE] [--tls-results FILE]
//! ```
//!
//! Exit status of `run`: 0 when every measurement succeeded, 1 when some
//! failed (each is a `failure` line, and the report lists it), 2 when the run
//! could not go on.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tqx_bench::report::markdown::{self, Inputs, TlsSource};
use tqx_bench::report::plan::Selection;
use tqx_bench::report::plot;
use tqx_bench::report::run::{self, RunOptions};
use tqx_bench::report::stats::Results;

#[derive(Parser)]
#[command(name = "bench-report", about = "Runs the benchmark matrix and writes docs/benchmarks.md")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Measure every cell of the matrix and write the results file (JSON lines)
    Run {
        /// Results file to write (replaced)
        #[arg(long)]
        results: PathBuf,
        /// One short run per cell and fewer cells (proves the harness works)
        #[arg(long)]
        quick: bool,
        /// Runs of every cell; medians are taken over them [default: 5, --quick 1]
        #[arg(long)]
        runs: Option<u32>,
        /// Measured seconds per cell [default: 1.5, --quick 1]
        #[arg(long)]
        seconds: Option<f64>,
        /// Warm-up seconds per cell, not measured [default: 0.5, --quick 0.2]
        #[arg(long)]
        warmup_seconds: Option<f64>,
        /// Task payload bytes (tqx-bench's default)
        #[arg(long, default_value_t = 100)]
        payload_bytes: u32,
        /// Only these scenarios (comma-separated: enqueue,cycle,batch,status,deps,storm,latency), or `tls`
        /// (the TLS rows and their plain twins)
        #[arg(long, value_delimiter = ',')]
        only: Option<Vec<String>>,
        /// Folder holding `tqx` and `tqx-bench` [default: $CARGO_TARGET_DIR/release]
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// `tqx-bench` to run (overrides --bin-dir for it)
        #[arg(long)]
        tqx_bench: Option<PathBuf>,
        #[arg(long, default_value = "redis-server")]
        redis_server: PathBuf,
        #[arg(long, default_value = "beanstalkd")]
        beanstalkd: PathBuf,
        /// The broker itself (Debian's /usr/sbin/rabbitmq-server would switch to the rabbitmq user)
        #[arg(long, default_value = "/usr/lib/rabbitmq/bin/rabbitmq-server")]
        rabbitmq_server: PathBuf,
        #[arg(long, default_value = "nats-server")]
        nats_server: PathBuf,
        /// apart: servers on every allowed CPU but the last, tqx-bench on the last; shared: no pinning
        #[arg(long, default_value = "apart", value_parser = ["apart", "shared"])]
        placement: String,
        /// Where the servers' data directories go: on the disk to measure, not a tmpfs
        #[arg(long)]
        data_root: PathBuf,
        /// The command line the report should show
        #[arg(long, default_value = "bench/run")]
        command: String,
    },
    /// Write the report and its plots from a results file
    Render {
        #[arg(long)]
        results: PathBuf,
        /// The Markdown report to write
        #[arg(long)]
        out: PathBuf,
        /// Folder for the SVG plots (created)
        #[arg(long)]
        plots: PathBuf,
        /// Hand-written introduction to include
        #[arg(long)]
        intro: Option<PathBuf>,
        /// Hand-written change log to include
        #[arg(long)]
        changelog: Option<PathBuf>,
        /// How the report names the results file [default: --results as given]
        #[arg(long)]
        results_label: Option<String>,
        /// The TLS section's (and issue 18's targets') results, from a run of their own
        /// (`bench/run --only tls`) [default: --results]
        #[arg(long)]
        tls_results: Option<PathBuf>,
        /// How the report names --tls-results [default: as given]
        #[arg(long)]
        tls_results_label: Option<String>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Commands::Run {
            results,
            quick,
            runs,
            seconds,
            warmup_seconds,
            payload_bytes,
            only,
            bin_dir,
            tqx_bench,
            redis_server,
            beanstalkd,
            rabbitmq_server,
            nats_server,
            placement,
            data_root,
            command,
        } => {
            let placement = if placement == "shared" {
                run::Placement::Shared
            } else {
                match run::allowed_cpus() {
                    Ok(cpus) => run::Placement::apart(&cpus),
                    Err(e) => return fail(&e),
                }
            };
            let only = match only.map(|names| parse_scenarios(&names)).transpose() {
                Ok(only) => only,
                Err(e) => return fail(&e),
            };
            let bin_dir = bin_dir.unwrap_or_else(|| {
                let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| "target".into());
                target.join("release")
            });
            let opts = RunOptions {
                quick,
                runs: runs.unwrap_or(if quick { 1 } else { 5 }).max(1),
                seconds: seconds.unwrap_or(if quick { 1.0 } else { 1.5 }),
                warmup_seconds: warmup_seconds.unwrap_or(if quick { 0.2 } else { 0.5 }),
                payload_bytes,
                only,
                tqx: bin_dir.join("tqx"),
                tqx_bench: tqx_bench.unwrap_or_else(|| bin_dir.join("tqx-bench")),
                redis_server,
                beanstalkd,
                rabbitmq_server,
                nats_server,
                placement,
                data_root,
                results,
                command,
            };
            match run::run(&opts) {
                Ok(0) => ExitCode::SUCCESS,
                Ok(failed) => {
                    eprintln!("bench-report: {failed} measurement(s) failed; see the results file");
                    ExitCode::from(1)
                }
                Err(e) => fail(&e),
            }
        }
        Commands::Render { results, out, plots, intro, changelog, results_label, tls_results, tls_results_label } => {
            let tls = tls_results.map(|path| {
                let label = tls_results_label.unwrap_or_else(|| path.display().to_string());
                (path, label)
            });
            match render(&results, &out, &plots, intro.as_deref(), changelog.as_deref(), results_label, tls) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("bench-report: {message}");
    ExitCode::from(2)
}

fn parse_scenarios(names: &[String]) -> Result<Vec<Selection>, String> {
    names
        .iter()
        .map(|n| Selection::parse(n.trim()).ok_or_else(|| format!("unknown scenario {n:?} in --only (or `tls`)")))
        .collect()
}

fn read_optional(path: Option<&Path>) -> Result<String, String> {
    match path {
        None => Ok(String::new()),
        Some(p) => fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display())),
    }
}

fn render(
    results_path: &Path,
    out: &Path,
    plots_dir: &Path,
    intro: Option<&Path>,
    changelog: Option<&Path>,
    results_label: Option<String>,
    tls: Option<(PathBuf, String)>,
) -> Result<(), String> {
    let read = |path: &Path| -> Result<Results, String> {
        let text = fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        Results::parse_jsonl(&text).map_err(|e| format!("{}: {e}", path.display()))
    };
    let results = read(results_path)?;
    let tls_results = tls.as_ref().map(|(path, _)| read(path)).transpose()?;
    fs::create_dir_all(plots_dir).map_err(|e| format!("creating {}: {e}", plots_dir.display()))?;
    let plots = plot::render_all(&results);
    for p in &plots {
        let path = plots_dir.join(&p.name);
        fs::write(&path, &p.svg).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    let names: Vec<String> = plots.into_iter().map(|p| p.name).collect();
    // Links in the report are relative to the report's folder when the plots
    // are below it (docs/benchmarks.md → benchmarks/enqueue.svg).
    let base = out.parent().unwrap_or(Path::new(""));
    let plots_link = match plots_dir.strip_prefix(base) {
        Ok(rel) if !base.as_os_str().is_empty() || plots_dir.is_relative() => rel.display().to_string(),
        _ => plots_dir.display().to_string(),
    };
    let label = results_label.unwrap_or_else(|| results_path.display().to_string());
    let report = markdown::render(&Inputs {
        results: &results,
        intro: &read_optional(intro)?,
        changelog: &read_optional(changelog)?,
        plots_dir: &plots_link,
        plots: &names,
        results_path: &label,
        tls: tls_results
            .as_ref()
            .zip(tls.as_ref())
            .map(|(results, (_, label))| TlsSource { results, results_path: label }),
    });
    fs::write(out, report).map_err(|e| format!("writing {}: {e}", out.display()))?;
    eprintln!("bench-report: wrote {} and {} plot(s) in {}", out.display(), names.len(), plots_dir.display());
    Ok(())
}
