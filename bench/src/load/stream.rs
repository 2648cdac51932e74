//! The connection under a session: plain TCP, or TLS over it
//! (`tqx-bench --tls-ca`).
//!
//! [`Stream`] is an enum, not a `Box<dyn AsyncRead + AsyncWrite>`: every read
//! and write is one `match` on a value the branch predictor learns at the first
//! call, so the plain path costs what it cost before TLS existed (no virtual
//! call, no allocation). The TLS variant is boxed because a rustls client
//! connection is a few kilobytes, which would otherwise make every plain
//! connection carry them too.
//!
//! [`Connector`] opens them: the TLS settings are read once per run
//! ([`Connector::tls`]: the CA file, SNI `localhost`, the protocol's ALPN) and
//! shared by every connection.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The name the server's certificate is checked against (SNI too): the
/// benchmark's certificate is made for `localhost` and `127.0.0.1`
/// (`report::run`), and every server under test listens on loopback.
pub const TLS_SERVER_NAME: &str = "localhost";

/// One connection's bytes: plain, or through a TLS session.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How a connected socket becomes a [`Stream`]: as it is, or after a TLS
/// handshake. Cheap to clone (the TLS configuration is shared).
#[derive(Clone, Default)]
pub(crate) struct Connector {
    tls: Option<TlsConnector>,
}

impl Connector {
    /// Plain TCP.
    pub(crate) fn plain() -> Connector {
        Connector { tls: None }
    }

    /// TLS trusting the CAs of the PEM file `ca` (tqx_client's reader and
    /// configuration: TLS 1.3 and 1.2, the `ring` provider), offering `alpn`
    /// (`None`: no ALPN extension, as Redis clients send none).
    pub(crate) fn tls(ca: &Path, alpn: Option<&[u8]>) -> Result<Connector, String> {
        // tqx_client sets exactly one protocol; cleared where none is wanted.
        let config = tqx_client::tls::client_config(ca, None, alpn.unwrap_or(b""))?;
        let mut config = Arc::unwrap_or_clone(config);
        if alpn.is_none() {
            config.alpn_protocols.clear();
        }
        Ok(Connector { tls: Some(TlsConnector::from(Arc::new(config))) })
    }

    /// `socket` as a [`Stream`]: the TLS handshake, when there is one, is done
    /// when this returns (a refused certificate fails here).
    pub(crate) async fn wrap(&self, socket: TcpStream) -> io::Result<Stream> {
        match &self.tls {
            None => Ok(Stream::Plain(socket)),
            Some(connector) => {
                let name = ServerName::try_from(TLS_SERVER_NAME).map_err(io::Error::other)?;
                let stream =
                    connector.connect(name, socket).await.map_err(|e| match tqx_client::tls::describe_failure(&e) {
                        Some(why) => io::Error::new(e.kind(), why),
                        None => e,
                    })?;
                Ok(Stream::Tls(Box::new(stream)))
            }
        }
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.tls.is_some() { "Connector(TLS)" } else { "Connector(plain)" })
    }
}
