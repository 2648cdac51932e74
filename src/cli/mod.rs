//! `tqx`: the TaskQueueX command line (the binary, `src/main.rs`, only installs
//! the allocator and the panic hook and calls [`main`]).
//!
//! `tqx serve` (the default when no subcommand is given) runs the server
//! (`serve.rs`: its flags and how they become a [`crate::server::ServeConfig`]);
//! the client subcommands (`enqueue`, `dequeue`, `complete`, ...; `client.rs`)
//! talk to a running server over its HTTP/JSON API (docs/http-api.md) through
//! [`http_client`], or with `--binary` over the binary protocol (replies
//! rendered by [`binary`]), and print its JSON replies; `tqx token create`
//! (`token.rs`) makes API tokens; `tqx demo` (`demo.rs`) shows the engine at
//! work on a simulated clock.

pub mod binary;
mod client;
mod demo;
pub mod http_client;
pub(crate) mod serve;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use client::ClientCommand;
use serve::ServeArgs;
use token::TokenCommand;

#[derive(Parser)]
#[command(
    name = "tqx",
    version,
    about = "TaskQueueX: a durable, low-latency task queue",
    long_about = "TaskQueueX: a durable, low-latency task queue.\n\n\
        Without a subcommand, runs the server (`tqx serve`) with the options below. \
        The client subcommands talk to a running server over HTTP (--server URL, or \
        the TQX_SERVER environment variable; default http://127.0.0.1:7700), or with \
        --binary over the binary protocol (--server HOST:PORT; default 127.0.0.1:7701), \
        print its JSON reply, and exit 0 on success, 1 when the server answers an error, \
        2 when it cannot be reached.",
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
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => serve::serve(args),
        Command::Client(command) => command.run(),
        Command::Token(command) => command.run(),
        Command::Demo => demo::run(),
    }
}
