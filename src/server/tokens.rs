//! The token table in force (`tqx serve --tokens FILE`; docs/security.md):
//! read at start (a bad file refuses the start), read again on SIGHUP (a bad
//! new file keeps the old table and logs why), and handed to connections as
//! an `Arc` snapshot.
//!
//! The request path takes no lock: a connection keeps its snapshot and, once
//! per pass over its input, compares the table's generation (one atomic load)
//! with its snapshot's; only after a reload does it take the lock, once, to
//! pick up the new table. A connection therefore sees a reload at its next
//! request, and `auth::Session` re-checks its token against the new table.
//! The same holds for a mutual-TLS client certificate's line (`cert-sha256=`):
//! a connection looks its certificate up once, when it starts (after its
//! handshake: [`TokenView::session`]), and again only after a reload.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::auth::{CertificateFingerprint, Session, Tokens};
use crate::limits::TOKEN_FILE_BYTES_MAX;

pub(crate) struct TokenStore {
    path: PathBuf,
    current: Mutex<Arc<Tokens>>,
    /// The generation of `current`: bumped after each swap.
    generation: AtomicU64,
    /// Whether clients can present certificates (`--tls-client-ca`): without,
    /// the file's `cert-sha256=` lines can never match.
    client_certificates: bool,
}

/// Warns when the file maps client certificates that no client can present
/// (no `--tls-client-ca`): an operator who meant mutual TLS would otherwise
/// see only 401s.
fn warn_unmatched(path: &Path, tokens: &Tokens, client_certificates: bool) {
    let certificates = tokens.certificates_len();
    if certificates > 0 && !client_certificates {
        tracing::warn!(
            file = %path.display(),
            certificates,
            "the token file maps client certificates, but without --tls-client-ca no client presents one: \
             those lines never match"
        );
    }
}

/// Reads and parses the token file; the message names the file and the line.
fn read(path: &Path, generation: u64) -> Result<Tokens, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    let mut text = String::new();
    // One byte more than the limit tells a file at the limit from one over it.
    file.take(TOKEN_FILE_BYTES_MAX as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    if text.len() > TOKEN_FILE_BYTES_MAX {
        return Err(format!("the token file {} is larger than {TOKEN_FILE_BYTES_MAX} bytes", path.display()));
    }
    let tokens = Tokens::parse(&text).map_err(|e| format!("the token file {} is not valid: {e}", path.display()))?;
    Ok(tokens.with_generation(generation))
}

impl TokenStore {
    /// Reads `path` at start. `client_certificates`: whether `--tls-client-ca`
    /// is set.
    pub(crate) fn load(path: &Path, client_certificates: bool) -> Result<TokenStore, String> {
        let tokens = read(path, 1)?;
        if tokens.is_empty() {
            tracing::warn!(file = %path.display(), "the token file holds no token: every request is refused");
        }
        let certificates = tokens.certificates_len();
        tracing::info!(file = %path.display(), tokens = tokens.len(), certificates, "tokens loaded");
        warn_unmatched(path, &tokens, client_certificates);
        Ok(TokenStore {
            path: path.to_owned(),
            current: Mutex::new(Arc::new(tokens)),
            generation: AtomicU64::new(1),
            client_certificates,
        })
    }

    /// On SIGHUP: reads the file again and swaps the table in, or keeps the
    /// old one and logs why (the message names the line, never a token).
    pub(crate) fn reload(&self) {
        let generation = self.generation.load(Ordering::Acquire) + 1;
        match read(&self.path, generation) {
            Ok(tokens) => {
                let (count, certificates) = (tokens.len(), tokens.certificates_len());
                warn_unmatched(&self.path, &tokens, self.client_certificates);
                *crate::sync::lock(&self.current) = Arc::new(tokens);
                // After the swap: a connection that sees the new generation
                // finds the new table under the lock.
                self.generation.store(generation, Ordering::Release);
                tracing::info!(file = %self.path.display(), tokens = count, certificates, "tokens reloaded");
            }
            Err(error) => tracing::warn!(%error, "SIGHUP: kept the tokens in force"),
        }
    }

    /// The table in force now.
    pub(crate) fn current(&self) -> Arc<Tokens> {
        crate::sync::lock(&self.current).clone()
    }

    /// Replaces `snapshot` with the table in force if a reload happened since
    /// it was taken: one atomic load when none did.
    pub(crate) fn refresh(&self, snapshot: &mut Arc<Tokens>) {
        if self.generation.load(Ordering::Acquire) != snapshot.generation() {
            *snapshot = self.current();
        }
    }
}

/// A connection's view of the tokens: `None` when the server has none.
pub(crate) struct TokenView<'a> {
    store: Option<&'a TokenStore>,
    snapshot: Option<Arc<Tokens>>,
}

impl<'a> TokenView<'a> {
    pub(crate) fn new(store: Option<&'a TokenStore>) -> TokenView<'a> {
        TokenView { store, snapshot: store.map(TokenStore::current) }
    }

    /// A new connection's session: with the client certificate its TLS
    /// handshake verified (mutual TLS), looked up in the table now, once;
    /// without tokens or a certificate, an empty one.
    pub(crate) fn session(&self, certificate: Option<CertificateFingerprint>) -> Session {
        match (self.snapshot.as_deref(), certificate) {
            (Some(tokens), Some(fingerprint)) => Session::with_certificate(tokens, fingerprint),
            _ => Session::new(),
        }
    }

    /// The table to authenticate this pass's requests against.
    pub(crate) fn tokens(&mut self) -> Option<&Tokens> {
        if let (Some(store), Some(snapshot)) = (self.store, self.snapshot.as_mut()) {
            store.refresh(snapshot);
        }
        self.snapshot.as_deref()
    }
}
