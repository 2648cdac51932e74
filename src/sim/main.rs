//! `tqx-simulate`: runs the deterministic simulator (docs/simulation.md).
//!
//! ```text
//! tqx-simulate --seed N [--steps M] [--plant release-one-record-early]
//! tqx-simulate --seeds FIRST..END [--steps M]
//! ```
//! Prints one line per seed (its trace hash and counts); a failing seed
//! prints what failed and the command that replays it, and exits 1.

use std::process::ExitCode;

use taskqueuex::sim::{run, Options, Plant};

const STEPS_DEFAULT: u64 = 2_000;

fn usage(message: &str) -> ExitCode {
    eprintln!(
        "{message}\nusage: tqx-simulate (--seed N | --seeds FIRST..END) [--steps M] [--plant release-one-record-early]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut seeds = None;
    let mut steps = STEPS_DEFAULT;
    let mut plant = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let Some(value) = args.next() else { return usage(&format!("{arg} needs a value")) };
        match arg.as_str() {
            "--seed" => match value.parse::<u64>() {
                Ok(seed) => seeds = Some(seed..seed + 1),
                Err(_) => return usage(&format!("--seed {value}: not a number")),
            },
            "--seeds" => {
                let range =
                    value.split_once("..").and_then(|(a, b)| Some(a.parse::<u64>().ok()?..b.parse::<u64>().ok()?));
                match range {
                    Some(range) => seeds = Some(range),
                    None => return usage(&format!("--seeds {value}: expected FIRST..END")),
                }
            }
            "--steps" => match value.parse() {
                Ok(value) => steps = value,
                Err(_) => return usage(&format!("--steps {value}: not a number")),
            },
            "--plant" => match value.as_str() {
                "release-one-record-early" => plant = Some(Plant::ReleaseOneRecordEarly),
                _ => return usage(&format!("--plant {value}: unknown")),
            },
            _ => return usage(&format!("unknown argument {arg}")),
        }
    }
    let Some(seeds) = seeds else { return usage("--seed or --seeds is required") };
    let mut failed = false;
    for seed in seeds {
        match run(Options { seed, steps, plant }) {
            Ok(report) => println!(
                "seed={seed} steps={} trace={:016x} requests={} replies={} crashes={} sync_failures={} bit_flips={} \
                 refused_damaged_log={} lsn_max={}",
                report.steps,
                report.trace_hash,
                report.requests,
                report.replies,
                report.crashes,
                report.sync_failures,
                report.bit_flips,
                report.refused_damaged_log,
                report.records_max_lsn
            ),
            Err(failure) => {
                eprintln!("{failure}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
