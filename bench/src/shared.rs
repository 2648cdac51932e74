//! What the benchmark report pipeline (`report`, `bench/run`) and the
//! footprint pipeline (`footprint`, `bench/footprint`) share: running
//! `tqx-bench` (or any program) with a timeout and reading its JSON line,
//! the machine's facts, number formatting and the command lines' exit codes.
//! Both start `tqx serve` through the test kit (`src/tests/kit`).

use std::path::Path;
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::time::Duration;

/// Exit status of a command line that could not be parsed (sysexits' EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

/// Parses the command line; on `--help`/`--version` or an error, prints it
/// and returns the exit code to end with (0, or [`EXIT_USAGE`]).
pub fn parse_cli<C: clap::Parser>() -> Result<C, ExitCode> {
    C::try_parse().map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::from(EXIT_USAGE)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// A program run to its end by [`run_with_timeout`].
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program args`, capturing its output; kills it after `timeout` (an
/// error saying so).
pub fn run_with_timeout(program: &Path, args: &[String], timeout: Duration) -> Result<Output, String> {
    let output = tqx_testkit::output_within(Command::new(program).args(args), timeout)
        .map_err(|e| format!("starting {}: {e}", program.display()))?;
    match output.status {
        Some(status) => Ok(Output { status, stdout: output.stdout, stderr: output.stderr }),
        None => Err(format!("{} {} did not finish within {timeout:?}; killed", program.display(), args.join(" "))),
    }
}

/// The last line of `text` that looks like a JSON object.
pub fn last_json_line(text: &str) -> Option<&str> {
    text.lines().rev().map(str::trim).find(|l| l.starts_with('{'))
}

/// The last few lines of `text`, for an error message (at most 1,500 characters).
pub fn tail(text: &str) -> String {
    let joined = tqx_testkit::tail_lines(text, 8, " | ");
    let chars: Vec<char> = joined.chars().collect();
    if chars.len() > 1_500 {
        chars[chars.len() - 1_500..].iter().collect()
    } else {
        joined
    }
}

/// stdout of `program args`, trimmed; `None` if it fails.
pub fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).stderr(Stdio::null()).output().ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// 1234567 → "1,234,567".
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_json_line_skips_noise() {
        assert_eq!(last_json_line("warming up\n{\"a\":1}\n\n"), Some("{\"a\":1}"));
        assert_eq!(last_json_line("nothing"), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let text: String = (0..20).map(|i| format!("line {i}\n")).collect();
        assert_eq!(tail(&text), (12..20).map(|i| format!("line {i}")).collect::<Vec<_>>().join(" | "));
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
