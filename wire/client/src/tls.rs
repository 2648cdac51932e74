//! TLS to a server started with `--tls-cert` (docs/security.md): rustls with
//! the `ring` provider, and the PEM readers the server and the `tqx` command
//! line use too (one way to read a certificate file).

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::error::ClientError;

/// ALPN protocol of the binary protocol over TLS (the server's binary listener
/// refuses a client that offers only other protocols).
pub const ALPN_BINARY: &[u8] = b"tqx/1";
/// ALPN protocol of the HTTP listener.
pub const ALPN_HTTP: &[u8] = b"http/1.1";

/// Reads every certificate in a PEM file (a chain: leaf first). `what` names
/// the file in the message ("TLS certificate", "client CA", ...).
pub fn read_certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("the {what} {} holds no PEM certificate", path.display()));
    }
    Ok(certificates)
}

/// Reads the private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("cannot read the TLS key {}: {e}", path.display()))
}

/// A root store holding every certificate of a PEM file.
pub fn read_roots(path: &Path, what: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(path, what)? {
        roots.add(certificate).map_err(|e| format!("the {what} {} is not a usable CA: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The crypto provider every TLS configuration of TaskQueueX uses: *ring*
/// (no C++ or cmake build, unlike aws-lc-rs). rustls 0.23.48 deprecates it
/// for lacking post-quantum key exchange (X25519MLKEM768); moving to
/// aws-lc-rs for that is a later decision (docs/security.md).
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration that trusts the CAs in `ca` (PEM), presents the
/// certificate and key of `identity` (mutual TLS) if given, and offers `alpn`.
/// TLS 1.3 and 1.2, rustls' safe defaults.
pub fn client_config(ca: &Path, identity: Option<(&Path, &Path)>, alpn: &[u8]) -> Result<Arc<ClientConfig>, String> {
    let roots = read_roots(ca, "CA file (--tls-ca)")?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = read_certificates(cert, "client certificate (--tls-cert)")?;
            let key_der = read_private_key(key)?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                format!("cannot use the client certificate {} with the key {}: {e}", cert.display(), key.display())
            })?
        }
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

/// The name a server's certificate must carry, from `HOST:PORT` (an IP
/// address is checked as one).
pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| format!("{host:?} cannot be checked against a certificate: {e}"))
}

/// Why a TLS connection failed, in words that say whether the certificate,
/// the client certificate or TLS itself is the problem (`None`: a plain I/O
/// error, not TLS's).
pub fn describe_failure(error: &io::Error) -> Option<String> {
    let rustls_error = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())?;
    Some(match rustls_error {
        rustls::Error::InvalidCertificate(reason) => {
            format!("the server's certificate was refused ({reason:?}): check --tls-ca and the server's certificate")
        }
        rustls::Error::AlertReceived(
            alert @ (rustls::AlertDescription::CertificateRequired
            | rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::CertificateExpired
            | rustls::AlertDescription::CertificateUnknown),
        ) => format!("the server refused our client certificate ({alert:?}): check --tls-cert and --tls-key"),
        other => format!("TLS failed: {other}"),
    })
}

/// TLS settings of a [`crate::Client`] ([`crate::ClientOptions::tls`]).
#[derive(Clone)]
pub struct ClientTls {
    pub(crate) config: Arc<ClientConfig>,
    /// The name the server's certificate must carry; `None`: the host of the
    /// address connected to.
    pub(crate) server_name: Option<String>,
}

impl ClientTls {
    /// Trusts the CAs in the PEM file `ca`; with `identity` (certificate and
    /// key PEM files), presents that client certificate (mutual TLS). Offers
    /// ALPN `tqx/1`.
    pub fn from_pem_files(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientTls, ClientError> {
        let config = client_config(ca, identity, ALPN_BINARY).map_err(|reason| ClientError::Tls { reason })?;
        Ok(ClientTls { config, server_name: None })
    }

    /// A configuration built elsewhere (it should offer ALPN `tqx/1` or none).
    pub fn from_config(config: Arc<ClientConfig>) -> ClientTls {
        ClientTls { config, server_name: None }
    }

    /// Checks the server's certificate against `name` instead of the host connected to.
    pub fn with_server_name(mut self, name: impl Into<String>) -> ClientTls {
        self.server_name = Some(name.into());
        self
    }
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &ClientTls) -> bool {
        Arc::ptr_eq(&self.config, &other.config) && self.server_name == other.server_name
    }
}

impl Eq for ClientTls {}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .field("alpn", &self.config.alpn_protocols.iter().map(|p| String::from_utf8_lossy(p)).collect::<Vec<_>>())
            .finish()
    }
}
