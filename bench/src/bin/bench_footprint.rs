//! `bench-footprint`: the footprint and scale measurements of issue 7
//! (docs/bench-harness.md, "Footprint and scale"). Starts a fresh `tqx serve`
//! per measurement, drives it with `tqx-bench`, reads its RSS from `/proc`,
//! and writes `footprint.jsonl`, `footprint.md` and two SVG plots.
//!
//!   bench-footprint [--scale small|full] [--out DIR] [--tqx PATH] [--tqx-bench PATH]
//!                   [--work DIR] [--command TEXT]
//!
//! Exit status: 0 when every measurement succeeded; 1 when some failed (the
//! report lists them); 2 when the run could not be made; 64 on bad arguments.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tqx_bench::footprint::{self, Options, Scale};
use tqx_bench::load::fdlimit;

use tqx_bench::shared::EXIT_USAGE;

#[derive(Parser, Debug)]
#[command(name = "bench-footprint", about = "Footprint and scale of tqx serve (issue 7; docs/bench-harness.md)")]
struct Cli {
    /// small: 10k/50k/100k tasks, 100/1,000 connections, under 2 minutes;
    /// full: the 1M/5M/10M tasks and 10,000 connections.
    #[arg(long, default_value = "small")]
    scale: String,
    /// Where footprint.jsonl, footprint.md and the plots go (default: a new
    /// temporary folder, printed at the end).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The server binary.
    #[arg(long)]
    tqx: Option<PathBuf>,
    /// The load generator (default: next to this binary).
    #[arg(long)]
    tqx_bench: Option<PathBuf>,
    /// Data directories and server logs, removed as the run goes (default: a
    /// new folder under $TMPDIR or /var/tmp: on disk, since `sync` figures
    /// depend on it).
    #[arg(long)]
    work: Option<PathBuf>,
    /// The command line shown in the report.
    #[arg(long)]
    command: Option<String>,
}

/// A new directory `PREFIX.<pid>.<n>` under `parent`.
fn fresh_dir(parent: PathBuf, prefix: &str) -> Result<PathBuf, String> {
    for n in 0..1_000 {
        let dir = parent.join(format!("{prefix}.{}.{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("creating {}: {e}", dir.display())),
        }
    }
    Err(format!("no free directory name {prefix}.* under {}", parent.display()))
}

fn main() -> ExitCode {
    let cli: Cli = match tqx_bench::shared::parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let Some(scale) = Scale::parse(&cli.scale) else {
        eprintln!("bench-footprint: --scale must be small or full, not {:?}", cli.scale);
        return ExitCode::from(EXIT_USAGE);
    };
    match run(cli, scale) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(failed) => {
            eprintln!("bench-footprint: {failed} measurement(s) failed; see the report's Failures section");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("bench-footprint: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli, scale: Scale) -> Result<usize, String> {
    // The servers inherit this limit (and raise it further when they may).
    let nofile_limit =
        fdlimit::raise_nofile(fdlimit::NOFILE_WANTED).map_err(|e| format!("cannot raise the open-file limit: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| format!("finding this binary: {e}"))?;
    let bin_dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    let tmp = || std::env::var_os("TMPDIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let out = match cli.out {
        Some(out) => out,
        None => fresh_dir(tmp(), "tqx-footprint")?,
    };
    let work = match cli.work {
        Some(work) => work,
        None => fresh_dir(tmp(), "tqx-footprint-work")?,
    };
    let opts = Options {
        scale,
        out: out.clone(),
        work: work.clone(),
        tqx: cli.tqx.unwrap_or_else(|| bin_dir.join("tqx")),
        tqx_bench: cli.tqx_bench.unwrap_or_else(|| bin_dir.join("tqx-bench")),
        command: cli.command.unwrap_or_else(|| format!("bench-footprint --scale {}", scale.name())),
        nofile_limit,
    };
    for (what, path) in [("tqx", &opts.tqx), ("tqx-bench", &opts.tqx_bench)] {
        if !path.is_file() {
            return Err(format!("{what} not found at {} (build it with --release)", path.display()));
        }
    }
    eprintln!("bench-footprint: scale {}, results in {}, open-file limit {nofile_limit}", scale.name(), out.display());
    let result = footprint::run(&opts);
    if let Err(e) = std::fs::remove_dir_all(&work) {
        eprintln!("bench-footprint: cannot remove {}: {e}", work.display());
    }
    let failed = result?;
    eprintln!("bench-footprint: wrote {}", out.join("footprint.md").display());
    Ok(failed)
}
