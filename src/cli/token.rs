//! `tqx token create`: makes a new API token (docs/security.md), prints it
//! once on stdout and appends its SHA-256 and grant to the token file, which
//! it creates with mode 0600 if missing. The token itself is stored nowhere.
//! A running server picks the new line up on SIGHUP.
//!
//! With `--cert FILE.pem` it makes no token: it appends a line granting the
//! scopes to the mutual-TLS client certificate of that file (the first, the
//! leaf), by its SHA-256 fingerprint, through the same checks and writing.

use std::fs::OpenOptions;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::auth::{self, CertificateFingerprint, Grant, Holder, QueuePattern, Scope, Scopes, TokenLine, Tokens};
use crate::limits::TOKEN_FILE_BYTES_MAX;

#[derive(Subcommand)]
pub(super) enum TokenCommand {
    /// Make a new token: print it once on stdout and append its hash and scopes to the token file
    /// (with --cert: grant the scopes to a client certificate instead; no token is made).
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
    /// Make no token: grant the scopes to the mutual-TLS client certificate in this PEM file (its
    /// first certificate, the leaf), by its SHA-256 fingerprint. The server must verify client
    /// certificates (--tls-client-ca).
    #[arg(long, value_name = "FILE.pem")]
    cert: Option<PathBuf>,
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
    let grant = Grant::new(Scopes::of(&args.scopes), args.queues, args.name);
    let scopes = grant.scopes();
    if let Some(pem) = &args.cert {
        let chain = tqx_client::tls::read_certificates(pem, "client certificate")?;
        // read_certificates refuses a file without a certificate.
        let fingerprint = CertificateFingerprint::of(&chain[0]);
        append(&args.file, &TokenLine { holder: Holder::Certificate(fingerprint), grant })?;
        eprintln!(
            "tqx token create: appended the client certificate of {} (SHA-256 fingerprint {fingerprint}) to {file} \
             ({scopes}). A running server reads it on SIGHUP (kill -HUP <pid>); it must verify client \
             certificates (--tls-client-ca).",
            pem.display()
        );
        return Ok(());
    }

    let mut random = [0u8; auth::TOKEN_RANDOM_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut source| source.read_exact(&mut random))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    let token = auth::format_token(&random);
    append(&args.file, &TokenLine { holder: Holder::Token(auth::hash_token(token.as_bytes())), grant })?;
    println!("{token}");
    eprintln!(
        "tqx token create: appended the token's hash to {file} ({scopes}); this is the only time the token is shown. \
         A running server reads it on SIGHUP (kill -HUP <pid>)."
    );
    Ok(())
}

/// Appends `line` to the token file `path` (created with mode 0600 if
/// missing), after checking that the file with it is one the server accepts.
fn append(path: &Path, line: &TokenLine) -> Result<(), String> {
    let file = path.display().to_string();
    // Checked through the server's own parser, so what is appended is what
    // the server will accept (a bad name is refused here, not at the reload).
    TokenLine::parse(&line.to_string()).map_err(|e| format!("cannot make this line: {e}"))?;

    let mut handle = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
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
        .map_err(|e| format!("cannot write {file}: {e}"))
}
