//! `tqx`: the TaskQueueX command line (the binary, `src/main.rs`, only installs
//! the allocator and the panic hook and calls [`main`]).
//!
//! `tqx serve` (the default when no subcommand is given) runs the server
//! (`serve.rs`: its flags and how they become a [`crate::server::ServeConfig`]);
//! the client subcommands (`client.rs`: `enqueue`, `dequeue`, `queue ...`,
//! `tasks`, `retry`, ...; `batch.rs`: `enqueue-batch`; `top.rs`: `tqx top`)
//! talk to a running server over its HTTP/JSON API (docs/http-api.md) through
//! [`http_client`], or with `--binary` over the binary protocol (replies
//! rendered by [`binary`]), both through `transport.rs`; `body.rs` reads
//! payloads and results (strict JSON, `@file`, `-`), `output.rs` prints
//! replies (tables, or `--json`), `exit.rs` decides the exit code. docs/cli.md
//! describes all of it. `tqx token create` (`token.rs`) makes API tokens;
//! `tqx demo` (`demo.rs`) shows the engine at work on a simulated clock.

mod batch;
pub mod binary;
mod body;
mod client;
mod config;
mod demo;
mod exit;
pub mod http_client;
mod output;
pub(crate) mod serve;
mod token;
mod top;
mod transport;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use client::ClientCommand;
use serve::ServeArgs;
use token::TokenCommand;

/// `tqx --help`'s text above the options (then the exit codes, `exit::HELP`).
const ABOUT_LONG: &str = "TaskQueueX: a durable, low-latency task queue.

Without a subcommand, runs the server (`tqx serve`) with the options below. The client \
subcommands talk to a running server over HTTP (--server URL, or the TQX_SERVER environment \
variable; default http://127.0.0.1:7700), or with --binary over the binary protocol \
(--server HOST:PORT; default 127.0.0.1:7701). Payloads and results must be JSON, given as \
text, @FILE, or - for standard input (--raw sends them unchecked). Lists print as tables; \
--json prints the server's JSON as it is. docs/cli.md has the details.";

#[derive(Parser)]
#[command(
    name = "tqx",
    version,
    about = "TaskQueueX: a durable, low-latency task queue",
    long_about = format!("{ABOUT_LONG}\n\n{}", exit::HELP),
    args_conflicts_with_subcommands = true,
    subcommand_precedence_over_arg = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default subcommand); Ctrl-C or SIGTERM stops it cleanly.
    Serve(ServeArgs),
    // The client subcommands, listed in `tqx --help` between `serve` and `demo`.
    #[command(flatten)]
    Client(ClientCommand),
    /// Make API tokens for a server with --tokens (docs/security.md).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run a scripted tour of the queue engine on a simulated clock and print each step.
    Demo,
}

/// Parses the command line (clap prints help, version and usage errors and
/// exits 0 or 2 itself) and runs the subcommand; its exit code is the process's.
pub fn main() -> ExitCode {
    // Every `tqx serve` flag also reads its TQX_* variable (config.rs).
    let command = config::with_environment(Cli::command());
    let argv: Vec<OsString> = std::env::args_os().collect();
    let matches = command.clone().get_matches_from(&argv);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    match cli.command {
        None | Some(Command::Serve(_)) => serve_configured(&command, &argv, matches),
        Some(Command::Client(command)) => command.run(),
        Some(Command::Token(command)) => command.run(),
        Some(Command::Demo) => demo::run(),
    }
}

/// `tqx serve` (or `tqx` alone): its flags and environment, then the
/// `--config` file under them (config.rs); `--print-config` prints the result.
fn serve_configured(command: &clap::Command, argv: &[OsString], matches: clap::ArgMatches) -> ExitCode {
    let serve_command = command.find_subcommand("serve").filter(|_| matches.subcommand_matches("serve").is_some());
    let serve_command = serve_command.unwrap_or(command);
    let serve_matches = matches.subcommand_matches("serve").unwrap_or(&matches).clone();
    let (matches, file) = match config::apply_file(command, argv, matches, &serve_matches, serve_command) {
        Ok(applied) => applied,
        Err(message) => {
            eprintln!("tqx serve: {message}");
            return ExitCode::from(2);
        }
    };
    let serve_matches = matches.subcommand_matches("serve").unwrap_or(&matches);
    let args = ServeArgs::from_arg_matches(serve_matches).unwrap_or_else(|error| error.exit());
    if args.print_config {
        print!("{}", config::render(serve_command, serve_matches, file.as_ref()));
        return ExitCode::SUCCESS;
    }
    serve::serve(args)
}
