//! TLS on both listeners (`--tls-cert`, `--tls-key`, `--tls-client-ca`;
//! docs/security.md), and the one transport seam the connections use:
//! [`Stream`], a plain tokio-uring socket or the same socket under rustls,
//! offering the calls `http_conn.rs` and `binary_conn.rs` make (`read`,
//! `write_all`, `shutdown`) with owned buffers, as tokio-uring does.
//!
//! rustls runs over the reactor's own completion-based I/O: no second event
//! loop. Reading: ciphertext read from the socket (one read in flight, as for
//! every connection: reactor.rs) is fed to `ServerConnection::read_tls` and
//! `process_new_packets`, and plaintext is handed out of `reader()`; what the
//! handshake (or a later key update) makes rustls want to send is written
//! before the next read. Writing: plaintext goes through `writer()`, and the
//! records `write_tls` produces are written with the ring. Every socket write
//! of a TLS connection happens under its one write lock ([`TlsStream::write_lock`]),
//! so handshake records written by the reader never interleave with replies
//! the processor or writer task sends, and records leave in the order rustls
//! made them.
//!
//! Handshake deadline: while a connection is handshaking, ciphertext that
//! arrives counts as the start of a request for `conn_timers.rs` (the request
//! deadline runs from its first byte; a client that connects and sends
//! nothing meets the idle timeout, as over plain TCP), and the end of the
//! handshake clears it. After the handshake a read that leaves a TLS record
//! unfinished also starts the deadline, so trickling a record is no way
//! around it. A peer that sends something that is not TLS (plain HTTP, a
//! binary frame) fails `process_new_packets` on its first bytes: rustls'
//! alert is sent and the connection closed at once.
//!
//! Handshake first: a connection completes its handshake ([`Stream::handshake`])
//! before its reader and processor start, so the client certificate a
//! mutual-TLS handshake verified is known, and looked up in the token file
//! (`auth::Session::with_certificate`), once, before the first request: no
//! request pays for it, and the plain path only returns at once.
//!
//! Reload: [`Tls`] holds the configuration new handshakes use; SIGHUP
//! ([`Tls::reload`]) re-reads the files and swaps it, or keeps the old one and
//! logs why. A connection keeps the configuration it was accepted with.

use std::cell::{Cell, RefCell};
use std::io::{self, BufRead as _, Write as _};
use std::net::Shutdown;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, RwLock};

use rustls::server::WebPkiClientVerifier;
use rustls::{ServerConfig, ServerConnection};
use tokio_uring::net::TcpStream;
// One way to read PEM files and one crypto provider, shared with the clients.
use tqx_client::tls::{provider, read_certificates, read_private_key, read_roots, ALPN_BINARY, ALPN_HTTP};

use super::buffers::READ_BYTES_MIN;
use super::conn_timers::ConnTimer;
use crate::auth::CertificateFingerprint;

/// Most ciphertext bytes taken from rustls per socket write: a batch of
/// replies larger than this goes out in several writes (rustls itself holds
/// at most 64 KiB of records unsent, its default buffer limit).
const TLS_WRITE_BYTES_MAX: usize = 64 << 10;

/// The PEM files TLS is configured from (`--tls-cert`, `--tls-key`,
/// `--tls-client-ca`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Mutual TLS: a client certificate signed by a CA in this file is required.
    pub client_ca: Option<PathBuf>,
}

/// Which listener a connection came in on (each has its own ALPN protocol).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listener {
    Http,
    Binary,
}

/// The configurations new handshakes use, one per listener.
pub(crate) struct TlsConfigs {
    http: Arc<ServerConfig>,
    binary: Arc<ServerConfig>,
}

/// TLS for the whole server: the files and the configuration built from them
/// last, replaced on reload.
pub(crate) struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<TlsConfigs>>,
}

impl Tls {
    /// Reads the files and builds the configurations; the message says which
    /// file is wrong and why.
    pub(crate) fn load(files: TlsFiles) -> Result<Tls, String> {
        let configs = build(&files)?;
        Ok(Tls { files, current: RwLock::new(Arc::new(configs)) })
    }

    /// Re-reads the files (SIGHUP). New handshakes use the new configuration;
    /// connections already accepted keep theirs. A file that cannot be used
    /// keeps the old configuration, with one warning saying why.
    pub(crate) fn reload(&self) {
        match build(&self.files) {
            Ok(configs) => {
                *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(configs);
                tracing::info!(cert = %self.files.cert.display(), "reloaded the TLS certificate and key");
            }
            Err(reason) => {
                tracing::warn!("TLS reload failed, still using the previous certificate and key: {reason}");
            }
        }
    }

    /// A new server-side TLS session for a connection just accepted on `listener`.
    fn session(&self, listener: Listener) -> Result<ServerConnection, rustls::Error> {
        let configs = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let config = match listener {
            Listener::Http => &configs.http,
            Listener::Binary => &configs.binary,
        };
        ServerConnection::new(config.clone())
    }
}

fn build(files: &TlsFiles) -> Result<TlsConfigs, String> {
    let chain = read_certificates(&files.cert, "TLS certificate")?;
    let key = read_private_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        // TLS 1.3 and 1.2, rustls' safe defaults (cipher suites, key exchange).
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = Arc::new(read_roots(path, "client CA")?);
            // Requires a client certificate (anonymous clients are refused).
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| format!("cannot use the client CA {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    // Also checks that the key is the certificate's.
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        format!("cannot use the TLS certificate {} with the key {}: {e}", files.cert.display(), files.key.display())
    })?;
    let with_alpn = |protocol: &[u8]| {
        let mut config = config.clone();
        // A client offering other protocols only is refused (rustls' default);
        // one offering none is accepted.
        config.alpn_protocols = vec![protocol.to_vec()];
        Arc::new(config)
    };
    Ok(TlsConfigs { http: with_alpn(ALPN_HTTP), binary: with_alpn(ALPN_BINARY) })
}

/// A connection's transport: the socket, or the socket under TLS. The plain
/// path costs one match per call.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Stream {
    /// The stream for a connection just accepted on `listener`: under TLS if
    /// the server has it. `Err`: no TLS session could be made (the socket is
    /// dropped, which closes it).
    pub(crate) fn accepted(
        socket: TcpStream,
        tls: Option<&Tls>,
        listener: Listener,
        timer: &Rc<ConnTimer>,
        read_bytes_max: usize,
    ) -> Result<Stream, rustls::Error> {
        let Some(tls) = tls else { return Ok(Stream::Plain(socket)) };
        let session = tls.session(listener)?;
        Ok(Stream::Tls(Box::new(TlsStream {
            socket,
            session: RefCell::new(session),
            ciphertext: RefCell::new(Ciphertext::default()),
            write_lock: tokio::sync::Mutex::new(()),
            timer: timer.clone(),
            handshake_charged: Cell::new(false),
            records: Cell::new(RecordCursor::default()),
            read_bytes: Cell::new(READ_BYTES_MIN),
            read_bytes_max: read_bytes_max.max(READ_BYTES_MIN),
        })))
    }

    /// The socket, if this connection is not under TLS (registered receive
    /// buffers are used for plain reads only).
    pub(crate) fn plain(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(socket) => Some(socket),
            Stream::Tls(_) => None,
        }
    }

    /// Completes the TLS handshake (nothing to do on a plain socket).
    /// `Err`: the handshake failed or the peer left (logged at debug level);
    /// the connection is to be closed.
    pub(crate) async fn handshake(&self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(tls) => {
                let result = Box::pin(tls.handshake()).await;
                if let Err(error) = &result {
                    tracing::debug!(%error, "TLS handshake failed");
                }
                result
            }
        }
    }

    /// The fingerprint of the client certificate the handshake verified, with
    /// mutual TLS (`--tls-client-ca`), once [`Stream::handshake`] is done:
    /// the leaf of the chain the client presented. Hashes it: called once
    /// per connection, where its session starts.
    pub(crate) fn client_certificate(&self) -> Option<CertificateFingerprint> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(tls) => {
                let session = tls.session.borrow();
                session.peer_certificates().and_then(|chain| chain.first()).map(|leaf| CertificateFingerprint::of(leaf))
            }
        }
    }

    /// Reads into `buffer` (from index 0, up to its capacity), as tokio-uring's
    /// `read`: `Ok(0)` is the end of the stream. Over TLS it returns once
    /// plaintext is available (or the stream ends or fails).
    pub(crate) async fn read(&self, buffer: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        match self {
            Stream::Plain(socket) => socket.read(buffer).await,
            // Boxed: the TLS future is large, and inline it would make every
            // connection's future that large, copied on each read and write
            // on the plain path too (callgrind: +157 instructions per HTTP
            // request at x16 in memcpy from the connection task, issue 18).
            Stream::Tls(tls) => Box::pin(tls.read(buffer)).await,
        }
    }

    /// Writes all of `buffer`, as tokio-uring's `write_all`, and gives it back.
    pub(crate) async fn write_all(&self, buffer: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        match self {
            Stream::Plain(socket) => socket.write_all(buffer).await,
            // Boxed for the same reason as in `read`.
            Stream::Tls(tls) => Box::pin(tls.write_all(buffer)).await,
        }
    }

    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Plain(socket) => socket.shutdown(how),
            Stream::Tls(tls) => tls.socket.shutdown(how),
        }
    }
}

/// Ciphertext read from the socket and not yet taken by rustls.
#[derive(Default)]
struct Ciphertext {
    bytes: Vec<u8>,
    taken: usize,
}

/// Where the ciphertext stream is in its records (a 5-byte header whose last
/// two bytes are the body's length, then the body): enough to tell whether a
/// read stopped in the middle of a record.
#[derive(Clone, Copy, Default)]
struct RecordCursor {
    header: [u8; 5],
    header_bytes: u8,
    body_remaining: usize,
}

impl RecordCursor {
    fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_remaining > 0 {
                let skipped = self.body_remaining.min(bytes.len());
                self.body_remaining -= skipped;
                bytes = &bytes[skipped..];
                continue;
            }
            self.header[usize::from(self.header_bytes)] = bytes[0];
            self.header_bytes += 1;
            bytes = &bytes[1..];
            if self.header_bytes == 5 {
                self.header_bytes = 0;
                self.body_remaining = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
            }
        }
    }

    fn in_record(&self) -> bool {
        self.header_bytes > 0 || self.body_remaining > 0
    }

    /// Bytes still to come of the record a read stopped inside (0 between
    /// records); a header cut short counts only its own rest.
    fn remaining_bytes(&self) -> usize {
        if self.header_bytes > 0 {
            5 - usize::from(self.header_bytes)
        } else {
            self.body_remaining
        }
    }
}

/// After a read of ciphertext: while `handshaking`, its first bytes start
/// the request deadline (`charged` remembers it); after the handshake, a read
/// that stopped inside a record (`in_record`) starts it. It only ever starts
/// the deadline, never clears one an unfinished request started: records
/// without plaintext cannot reset it.
pub(super) fn charge_deadline(timer: &ConnTimer, charged: &Cell<bool>, handshaking: bool, in_record: bool) {
    if handshaking {
        if !charged.replace(true) {
            timer.parsed(false, true);
        }
    } else if in_record {
        timer.parsed(false, true);
    }
}

/// The handshake is done: its deadline is over; what follows is timed as
/// requests are.
pub(super) fn handshake_done(timer: &ConnTimer, charged: &Cell<bool>) {
    charged.set(false);
    timer.parsed(false, false);
}

/// A socket under rustls (see the module comment).
pub(crate) struct TlsStream {
    socket: TcpStream,
    session: RefCell<ServerConnection>,
    ciphertext: RefCell<Ciphertext>,
    /// Held for every socket write: one writer at a time.
    write_lock: tokio::sync::Mutex<()>,
    timer: Rc<ConnTimer>,
    /// The handshake's bytes started the request deadline (cleared once it is done).
    handshake_charged: Cell<bool>,
    records: Cell<RecordCursor>,
    /// Bytes the next socket read asks for: sized by the ciphertext that
    /// arrives (`buffers::next_read_bytes`) and by the record a read left
    /// unfinished, not by the caller's plaintext buffer. Sized by the
    /// plaintext buffer, which shrinks to 512 bytes after each request
    /// batch, one 3.7 KB record of 16 pipelined HTTP requests took 8 socket
    /// reads (measured with perf's io_uring tracepoints, issue 18).
    read_bytes: Cell<usize>,
    /// `--read-bytes-max`: the most one socket read asks for.
    read_bytes_max: usize,
}

impl TlsStream {
    async fn handshake(&self) -> io::Result<()> {
        while self.session.borrow().is_handshaking() {
            if !self.advance().await? {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the peer left during the TLS handshake"));
            }
        }
        Ok(())
    }

    async fn read(&self, mut buffer: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        let capacity = buffer.capacity().max(1);
        buffer.clear();
        loop {
            // Plaintext rustls already holds comes first.
            match self.take_plaintext(&mut buffer, capacity) {
                // 0: the peer's close_notify, a clean end of stream.
                Ok(Some(read)) => return (Ok(read), buffer),
                Ok(None) => {}
                Err(error) => return (Err(error), buffer),
            }
            match self.advance().await {
                Ok(true) => {}
                // The end of the stream (or the socket shut down): no
                // close_notify, but nothing more will come.
                Ok(false) => return (Ok(0), buffer),
                Err(error) => return (Err(error), buffer),
            }
        }
    }

    /// Appends the plaintext rustls holds to `buffer`, up to `capacity`
    /// bytes, without zeroing the buffer first (`BufRead` hands out rustls'
    /// own chunks). `Some(n)`: `n` bytes were taken, or 0 at the peer's
    /// close_notify; `None`: rustls holds none (more ciphertext is needed).
    /// An error after some plaintext is left for the next call.
    fn take_plaintext(&self, buffer: &mut Vec<u8>, capacity: usize) -> io::Result<Option<usize>> {
        let mut session = self.session.borrow_mut();
        let mut reader = session.reader();
        while buffer.len() < capacity {
            match reader.fill_buf() {
                Ok([]) => break,
                Ok(chunk) => {
                    let taken = chunk.len().min(capacity - buffer.len());
                    buffer.extend_from_slice(&chunk[..taken]);
                    reader.consume(taken);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    return Ok((!buffer.is_empty()).then_some(buffer.len()));
                }
                Err(error) if buffer.is_empty() => return Err(error),
                Err(_) => break,
            }
        }
        Ok(Some(buffer.len()))
    }

    /// One step of the session: feeds the ciphertext already read to rustls
    /// as far as it takes it, or (none left) reads more from the socket;
    /// then sends what rustls wants to send (handshake records, a key
    /// update). `Ok(false)`: the socket's stream ended.
    async fn advance(&self) -> io::Result<bool> {
        match self.feed() {
            Ok(true) => {}
            Ok(false) => {
                // Nothing left to feed: read more from the socket, at least
                // the rest of a record a read left unfinished.
                let asked = self.read_bytes.get().max(self.records.get().remaining_bytes()).min(self.read_bytes_max);
                let chunk = std::mem::take(&mut self.ciphertext.borrow_mut().bytes);
                let chunk = super::buffers::read_buffer(chunk, asked);
                let (result, chunk) = self.socket.read(chunk).await;
                if result? == 0 {
                    return Ok(false);
                }
                self.read_bytes.set(super::buffers::next_read_bytes(asked, chunk.len(), self.read_bytes_max));
                let mut records = self.records.get();
                records.advance(&chunk);
                self.records.set(records);
                *self.ciphertext.borrow_mut() = Ciphertext { bytes: chunk, taken: 0 };
                self.charge_deadline(records.in_record());
                return Ok(true);
            }
            Err(error) => {
                // Send rustls' alert if it made one (best effort), then
                // fail: the reader ends and the connection closes.
                let _ = self.flush().await;
                tracing::debug!(%error, "TLS failed");
                return Err(io::Error::new(io::ErrorKind::InvalidData, error));
            }
        }
        // Handshake records (or a key update) rustls wants to send now.
        if self.session.borrow().wants_write() {
            self.flush().await?;
        }
        if self.handshake_charged.get() && !self.session.borrow().is_handshaking() {
            handshake_done(&self.timer, &self.handshake_charged);
            let session = self.session.borrow();
            tracing::debug!(
                version = ?session.protocol_version(),
                alpn = ?session.alpn_protocol().map(String::from_utf8_lossy),
                "TLS handshake done"
            );
        }
        Ok(true)
    }

    /// Feeds buffered ciphertext to rustls until it has plaintext to give or
    /// the ciphertext is used up. `Ok(false)`: nothing was left to feed.
    fn feed(&self) -> Result<bool, rustls::Error> {
        let mut ciphertext = self.ciphertext.borrow_mut();
        if ciphertext.taken >= ciphertext.bytes.len() {
            return Ok(false);
        }
        let mut session = self.session.borrow_mut();
        let mut refused_before = false;
        while ciphertext.taken < ciphertext.bytes.len() {
            let Ciphertext { bytes, taken } = &mut *ciphertext;
            let mut rest = &bytes[*taken..];
            let refused = match session.read_tls(&mut rest) {
                Ok(read) => {
                    *taken += read;
                    false
                }
                // rustls' buffers are full: what it holds must be processed
                // (or its plaintext taken) first.
                Err(_) => true,
            };
            let state = session.process_new_packets()?;
            if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() || session.wants_write() {
                break;
            }
            if refused && refused_before {
                // Processing made no room: more would never be taken (a bug
                // or a peer rustls cannot serve). Fail rather than spin.
                return Err(rustls::Error::General("rustls takes no more ciphertext".to_string()));
            }
            refused_before = refused;
        }
        Ok(true)
    }

    /// The request deadline covers the handshake from its first byte, and a
    /// TLS record that a read left unfinished.
    fn charge_deadline(&self, in_record: bool) {
        let handshaking = self.session.borrow().is_handshaking();
        charge_deadline(&self.timer, &self.handshake_charged, handshaking, in_record);
    }

    async fn write_all(&self, buffer: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let _writing = self.write_lock.lock().await;
        let mut written = 0;
        while written < buffer.len() {
            let accepted = match self.session.borrow_mut().writer().write(&buffer[written..]) {
                Ok(bytes) => bytes,
                Err(error) => return (Err(error), buffer),
            };
            written += accepted;
            match self.flush_locked().await {
                Ok(0) if accepted == 0 => {
                    // rustls took nothing and had nothing to send (it cannot
                    // before the handshake is done): it never will.
                    return (Err(io::Error::other("TLS refused to send (handshake not done)")), buffer);
                }
                Ok(_) => {}
                Err(error) => return (Err(error), buffer),
            }
        }
        (Ok(()), buffer)
    }

    /// Writes whatever records rustls wants to send, under the write lock.
    async fn flush(&self) -> io::Result<usize> {
        let _writing = self.write_lock.lock().await;
        self.flush_locked().await
    }

    /// [`TlsStream::flush`] with the lock held by the caller. Returns the
    /// bytes written.
    async fn flush_locked(&self) -> io::Result<usize> {
        let mut total = 0;
        loop {
            let mut out = Vec::new();
            {
                let mut session = self.session.borrow_mut();
                while session.wants_write() && out.len() < TLS_WRITE_BYTES_MAX {
                    session.write_tls(&mut out)?;
                }
            }
            if out.is_empty() {
                return Ok(total);
            }
            total += out.len();
            // Allocated per write and dropped after it: an idle TLS
            // connection holds no output buffer.
            let (result, _) = self.socket.write_all(out).await;
            result?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_cursor_knows_a_read_that_stops_inside_a_record() {
        let mut cursor = RecordCursor::default();
        assert!(!cursor.in_record());
        // A whole record: header (type 23, version 3.3, length 3) and body.
        cursor.advance(&[23, 3, 3, 0, 3, 1, 2, 3]);
        assert!(!cursor.in_record());
        // Part of a header, then the rest of it and part of the body.
        cursor.advance(&[23, 3]);
        assert!(cursor.in_record());
        cursor.advance(&[3, 1, 0, 9]);
        assert!(cursor.in_record());
        cursor.advance(&vec![0; 255]);
        assert!(!cursor.in_record(), "256 body bytes in all");
        // Two records in one read, the second cut short: one body byte to come.
        cursor.advance(&[22, 3, 3, 0, 1, 7, 22, 3, 3, 0, 2, 1]);
        assert!(cursor.in_record());
        assert_eq!(cursor.remaining_bytes(), 1);
        // A header cut short: the next read asks at least for its rest.
        cursor.advance(&[9, 23, 3]);
        assert_eq!(cursor.remaining_bytes(), 3);
        cursor.advance(&[3, 0x40, 0]);
        assert_eq!(cursor.remaining_bytes(), 0x4000, "a 16 KiB record's body");
    }
}
