//! `tqx token create`: makes a new API token (docs/security.md), prints it
//! once on stdout and appends its SHA-256 and grant to the token file, which
//! it creates with mode 0600 if missing. The token itself is stored nowhere.
//! A running server picks the new line up on SIGHUP.

use std::fs::OpenOptions;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::auth::{self, Grant, QueuePattern, Scope, Scopes, TokenLine, Tokens};
use crate::limits::TOKEN_FILE_BYTES_MAX;

#[derive(Subcommand)]
pub(super) enum TokenCommand {
    /// Make a new token: print it once on stdout and append its hash and scopes to the token file.
    Create(CreateArgs),
}

#[derive(Args)]
pub(super) struct CreateArgs {
    /// A scope the token grants: produce (enqueue), consume (dequeue, complete, fail, extend) or admin
    /// (everything, queues included). Repeat for several.
    #[arg(long = "scope", value_name = "SCOPE", required = true, value_parser = parse_scope)]
    scopes: Vec<Scope>,
    /// Limit the token to these queues: names, or prefixes ending in `*` (`orders.*`), separated by
    /// commas or given again. Default: every queue.
    #[arg(long = "queues", value_name = "PATTERNS", value_delimiter = ',', value_parser = QueuePattern::parse)]
    queues: Vec<QueuePattern>,
    /// A name for the token's line (which line to delete to revoke it): A-Z a-z 0-9 _ - . :
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The token file `tqx serve --tokens` reads (created with mode 0600 if missing).
    #[arg(long, value_name = "FILE")]
    file: PathBuf,
}

fn parse_scope(name: &str) -> Result<Scope, String> {
    Scope::parse(name).ok_or_else(|| format!("{name:?} is not a scope: produce, consume or admin"))
}

impl TokenCommand {
    pub(super) fn run(self) -> ExitCode {
        match self {
            TokenCommand::Create(args) => match create(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("tqx token create: {message}");
                    ExitCode::FAILURE
                }
            },
        }
    }
}

fn create(args: CreateArgs) -> Result<(), String> {
    let file = args.file.display().to_string();
    let mut random = [0u8; auth::TOKEN_RANDOM_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut source| source.read_exact(&mut random))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    let token = auth::format_token(&random);
    let grant = Grant::new(Scopes::of(&args.scopes), args.queues, args.name);
    let line = TokenLine { hash: auth::hash_token(token.as_bytes()), grant };
    // Checked through the server's own parser, so what is appended is what
    // the server will accept (a bad name is refused here, not at the reload).
    TokenLine::parse(&line.to_string()).map_err(|e| format!("cannot make this token: {e}"))?;

    let mut handle = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&args.file)
        .map_err(|e| format!("cannot open {file}: {e}"))?;
    let mut existing = String::new();
    (&mut handle)
        .take(TOKEN_FILE_BYTES_MAX as u64 + 1)
        .read_to_string(&mut existing)
        .map_err(|e| format!("cannot read {file}: {e}"))?;
    // The whole file as the server will read it after this line is added.
    let separator = if existing.is_empty() || existing.ends_with('\n') { "" } else { "\n" };
    let addition = format!("{separator}{line}\n");
    let after = format!("{existing}{addition}");
    if after.len() > TOKEN_FILE_BYTES_MAX {
        return Err(format!("{file} would be larger than {TOKEN_FILE_BYTES_MAX} bytes"));
    }
    Tokens::parse(&after).map_err(|e| format!("{file} is not a valid token file ({e}); nothing was added"))?;
    handle
        .write_all(addition.as_bytes())
        .and_then(|()| handle.sync_all())
        .map_err(|e| format!("cannot write {file}: {e}"))?;

    println!("{token}");
    eprintln!(
        "tqx token create: appended the token's hash to {file} ({}); this is the only time the token is shown. \
         A running server reads it on SIGHUP (kill -HUP <pid>).",
        line.grant.scopes()
    );
    Ok(())
}
