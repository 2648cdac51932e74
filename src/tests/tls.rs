//! TLS on both listeners against the real server (issue 18, items 1, 3 and 4;
//! docs/security.md): handshake and requests over both protocols, real
//! external clients (`curl`, `openssl s_client`), certificates refused
//! (wrong CA, expired, missing client certificate), plain text to a TLS port,
//! stalled and abandoned handshakes, reload on SIGHUP, the refusal to
//! listen beyond loopback without TLS or tokens, and client certificates
//! mapped to scopes by the token file (`cert-sha256=`). Every certificate and key
//! is made here with rcgen, in a temporary directory (none is committed).
//!
//! Timing follows slow_clients.rs: small deadlines, lower bounds only where
//! they prove which mechanism acted, generous upper bounds.

mod support;

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use support::{is_closed, Server};
use tqx_client::{ClientError, ClientOptions, ClientTls, TaskSpec};
use tqx_testkit::TempDir;

/// How long a test waits for what the server must do within about a second.
const WITHIN: Duration = Duration::from_secs(15);

// ---- certificates ------------------------------------------------------------------

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A leaf certificate and its key, PEM: for a server (`127.0.0.1`,
    /// `localhost`) or a client; `expired` ends its validity in 2001.
    fn issue(&self, client: bool, expired: bool) -> (String, String) {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, if client { "tqx test client" } else { "tqx test server" });
        params.extended_key_usages =
            vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// PEM files in a temporary directory.
struct Files {
    dir: TempDir,
}

impl Files {
    fn new() -> Files {
        Files { dir: TempDir::create(tqx_testkit::fresh_path("tqx-tls-test")).unwrap() }
    }

    /// Writes `text` to `name` atomically (a rename: a reload never reads half a file).
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let partial = self.dir.path().join(format!("{name}.partial"));
        std::fs::write(&partial, text).unwrap();
        std::fs::rename(&partial, &path).unwrap();
        path
    }

    fn ca(&self, name: &str, ca: &Ca) -> PathBuf {
        self.write(name, &ca.cert.pem())
    }

    /// Writes a leaf pair as `NAME.pem` and `NAME.key`.
    fn pair(&self, name: &str, (cert, key): &(String, String)) -> (PathBuf, PathBuf) {
        (self.write(&format!("{name}.pem"), cert), self.write(&format!("{name}.key"), key))
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `--tls-cert CERT --tls-key KEY` plus `extra`, as owned strings.
fn tls_args(cert: &Path, key: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--tls-cert".to_string(), path_str(cert).into(), "--tls-key".into(), path_str(key).into()];
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// Starts a TLS server and waits until `/healthz` answers 200 over TLS.
fn start_tls(args: &[String], ca: &Path, identity: Option<(&Path, &Path)>) -> Server {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::launch(support::fresh_dir(), &args);
    let config = http_config(ca, identity);
    let deadline = Instant::now() + WITHIN;
    loop {
        if let Ok(mut stream) = tls_connect(server.addr, &config) {
            if let Ok((200, _)) = http(&mut stream, "GET", "/healthz", None) {
                return server;
            }
        }
        assert!(Instant::now() < deadline, "the TLS server was not ready; stderr:\n{}", server.stderr());
        thread::sleep(Duration::from_millis(50));
    }
}

// ---- clients -----------------------------------------------------------------------

fn http_config(ca: &Path, identity: Option<(&Path, &Path)>) -> Arc<ClientConfig> {
    tqx_client::tls::client_config(ca, identity, tqx_client::tls::ALPN_HTTP).unwrap()
}

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A TLS connection to `addr`, handshake done (from the client's side: under
/// TLS 1.3 the server may still refuse our certificate on the first read).
fn tls_connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> std::io::Result<TlsStream> {
    let socket = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let session = ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
    let mut stream = StreamOwned::new(session, socket);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// One keep-alive HTTP request over TLS: (status, body).
fn http(stream: &mut TlsStream, method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, Vec<u8>)> {
    http_with_token(stream, method, path, body, None)
}

/// [`http`] with `Authorization: Bearer TOKEN` if a token is given.
fn http_with_token(
    stream: &mut TlsStream,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let body = body.unwrap_or("");
    let authorization = token.map(|token| format!("Authorization: Bearer {token}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{authorization}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    stream.flush()?;
    tqx_testkit::read_response(&mut BufReader::new(stream), 1 << 20)
}

/// The binary-protocol client over TLS, one attempt.
fn binary_client(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<tqx_client::blocking::Client, ClientError> {
    let options = ClientOptions {
        connect_timeout_ms: 5_000,
        reconnect_attempts_max: 1,
        tls: Some(ClientTls::from_pem_files(ca, identity)?),
        ..ClientOptions::default()
    };
    tqx_client::blocking::Client::connect(&addr.to_string(), options)
}

#[track_caller]
fn assert_tls_error(result: Result<impl std::fmt::Debug, ClientError>, words: &[&str]) {
    match result {
        Err(ClientError::Tls { reason }) => {
            for word in words {
                assert!(reason.contains(word), "{reason:?} should mention {word:?}");
            }
        }
        other => panic!("expected a TLS error mentioning {words:?}, got {other:?}"),
    }
}

/// Runs `tqx ARGS` (a client subcommand): (exit code, stdout, stderr).
fn tqx(args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tqx"));
    command.args(args).env_remove("TQX_SERVER");
    let output = tqx_testkit::output_within(&mut command, WITHIN).unwrap();
    (output.status.and_then(|s| s.code()).unwrap_or(-1), output.stdout, output.stderr)
}

/// Runs `openssl s_client ARGS`, writing `input` then closing its stdin:
/// stdout and stderr together.
fn s_client(args: &[&str], input: &str) -> String {
    let mut child = Command::new("openssl")
        .arg("s_client")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let deadline = Instant::now() + WITHIN;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Waits for the server to close `stream` (reading and dropping whatever it
/// sends: a handshake flight, an alert); returns how long that took.
#[track_caller]
fn wait_closed(stream: &mut TcpStream, within: Duration) -> Duration {
    let start = Instant::now();
    let mut buffer = [0u8; 4096];
    loop {
        let remaining = within.saturating_sub(start.elapsed());
        assert!(!remaining.is_zero(), "the server did not close the connection within {within:?}");
        stream.set_read_timeout(Some(remaining)).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return start.elapsed(),
            Err(e) => panic!("the server did not close the connection within {within:?}: {e}"),
        }
    }
}

/// A ClientHello as a real client sends it, offering `alpn`.
fn client_hello(ca: &Path, alpn: &[u8]) -> Vec<u8> {
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let config = tqx_client::tls::client_config(ca, None, alpn).unwrap();
    let mut session = ClientConnection::new(config, name).unwrap();
    let mut hello = Vec::new();
    session.write_tls(&mut hello).unwrap();
    hello
}

fn wait_for_log(server: &Server, text: &str) {
    let deadline = Instant::now() + WITHIN;
    while !server.stderr().contains(text) {
        assert!(Instant::now() < deadline, "the server never logged {text:?}; stderr:\n{}", server.stderr());
        thread::sleep(Duration::from_millis(20));
    }
}

// ---- tests -------------------------------------------------------------------------

/// Both listeners speak TLS 1.3 (and 1.2) with their ALPN protocols, and
/// serve requests: HTTP through rustls, the binary protocol through
/// tqx-client, and the CLI over both.
#[test]
fn both_protocols_serve_requests_over_tls_with_their_alpn() {
    let files = Files::new();
    let ca = Ca::new("tqx test CA");
    let ca_pem = files.ca("ca.pem", &ca);
    let (cert, key) = files.pair("server", &ca.issue(false, false));
    let server = start_tls(&tls_args(&cert, &key, &[]), &ca_pem, None);

    let mut stream = tls_connect(server.addr, &http_config(&ca_pem, None)).unwrap();
    assert_eq!(stream.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(stream.conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    let (status, body) = http(&mut stream, "POST", "/v1/queues/tls/tasks", Some(r#"{"payload":{"n":1}}"#)).unwrap();
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    // A body larger than one TLS record (16 KiB) both ways, on the same connection.
    let big = format!(r#"{{"payload":"{}"}}"#, "x".repeat(100_000));
    assert_eq!(http(&mut stream, "POST", "/v1/queues/big/tasks", Some(&big)).unwrap().0, 201);
    let (status, body) = http(&mut stream, "POST", "/v1/dequeue", Some(r#"{"queues":["big"]}"#)).unwrap();
    assert_eq!(status, 200);
    assert!(body.len() > 100_000, "the whole task came back: {} bytes", body.len());

    // TLS 1.2 too.
    let tls12 = ClientConfig::builder_with_provider(tqx_client::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(tqx_client::tls::read_roots(&ca_pem, "CA").unwrap())
        .with_no_client_auth();
    let mut stream = tls_connect(server.addr, &Arc::new(tls12)).unwrap();
    assert_eq!(stream.conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(http(&mut stream, "GET", "/healthz", None).unwrap().0, 200);

    // The binary protocol through the Rust client.
    let binary = server.binary_addr.unwrap();
    let client = binary_client(binary, &ca_pem, None).unwrap();
    assert!(client.ping().unwrap());
    let task = TaskSpec { payload: Bytes::from_static(b"{\"n\":2}"), ..TaskSpec::default() };
    let enqueued = client.enqueue("tls-binary", task).unwrap();
    let leased = client.dequeue(&["tls-binary"], 1, None, 0).unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].id, enqueued.id);

    // The command line over both protocols.
    let ca_arg = path_str(&ca_pem);
    let https = format!("https://127.0.0.1:{}", server.addr.port());
    let (code, stdout, stderr) = tqx(&["queues", "--json", "--server", &https, "--tls-ca", ca_arg]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"tls-binary\""), "{stdout}");
    let (code, stdout, stderr) =
        tqx(&["queue", "tls", "--json", "--binary", "--server", &binary.to_string(), "--tls-ca", ca_arg]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"name\":\"tls\""), "{stdout}");
}

/// Real external clients: curl and openssl s_client verify the server's
/// certificate against the CA and talk to it; ALPN picks `http/1.1` on the
/// HTTP port and `tqx/1` on the binary one, and a client offering only
/// another protocol is refused.
#[test]
fn curl_and_openssl_s_client_talk_to_the_tls_ports() {
    let files = Files::new();
    let ca = Ca::new("tqx test CA");
    let ca_pem = files.ca("ca.pem", &ca);
    let (cert, key) = files.pair("server", &ca.issue(false, false));
    let server = start_tls(&tls_args(&cert, &key, &[]), &ca_pem, None);
    let ca_arg = path_str(&ca_pem);

    let url = format!("https://127.0.0.1:{}/v1/queues/curl/tasks", server.addr.port());
    let output = tqx_testkit::output_within(
        Command::new("curl").args(["-sS", "--cacert", ca_arg, "-H", "Content-Type: application/json"]).args([
            "-d",
            r#"{"payload":{"from":"curl"}}"#,
            "-w",
            "\n%{http_code}",
            url.as_str(),
        ]),
        WITHIN,
    )
    .unwrap();
    assert!(output.stdout.ends_with("\n201"), "curl: {}{}", output.stdout, output.stderr);

    let http_addr = server.addr.to_string();
    let request = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let common = ["-CAfile", ca_arg, "-verify_return_error", "-verify_ip", "127.0.0.1", "-ign_eof"];
    let out = s_client(&[&["-connect", http_addr.as_str(), "-alpn", "http/1.1"][..], &common[..]].concat(), request);
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    assert!(out.contains("ALPN protocol: http/1.1"), "{out}");
    assert!(out.contains("HTTP/1.1 200"), "{out}");

    let binary_addr = server.binary_addr.unwrap().to_string();
    let out = s_client(&["-connect", &binary_addr, "-CAfile", ca_arg, "-alpn", "tqx/1"], "");
    assert!(out.contains("ALPN protocol: tqx/1"), "{out}");
    let out = s_client(&["-connect", &binary_addr, "-CAfile", ca_arg, "-alpn", "h2"], "");
    assert!(out.contains("no application protocol"), "a client offering only h2 is refused: {out}");
    server.assert_healthy_tls(&ca_pem);
}

/// A certificate from another CA, or an expired one, is refused by every
/// client, and the error says it is the certificate.
#[test]
fn a_wrong_ca_or_an_expired_certificate_is_refused_and_the_error_says_so() {
    let files = Files::new();
    let ca = Ca::new("tqx test CA");
    let ca_pem = files.ca("ca.pem", &ca);
    let other_pem = files.ca("other.pem", &Ca::new("another CA"));
    let (cert, key) = files.pair("server", &ca.issue(false, false));
    let server = start_tls(&tls_args(&cert, &key, &[]), &ca_pem, None);

    assert_tls_error(binary_client(server.binary_addr.unwrap(), &other_pem, None), &["certificate", "UnknownIssuer"]);
    let error = tls_connect(server.addr, &http_config(&other_pem, None)).unwrap_err();
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");
    let https = format!("https://127.0.0.1:{}", server.addr.port());
    let (code, _, stderr) = tqx(&["queues", "--server", &https, "--tls-ca", path_str(&other_pem)]);
    assert_eq!(code, 1, "a TLS failure exits 1: {stderr}");
    assert!(stderr.contains("certificate was refused"), "{stderr}");
    let output = tqx_testkit::output_within(
        Command::new("curl").args(["-sS", "--cacert", path_str(&other_pem), format!("{https}/healthz").as_str()]),
        WITHIN,
    )
    .unwrap();
    assert_eq!(output.status.and_then(|s| s.code()), Some(60), "curl: certificate problem: {}", output.stderr);

    // An expired certificate from the right CA.
    let (cert, key) = files.pair("expired", &ca.issue(false, true));
    let args = tls_args(&cert, &key, &[]);
    let expired = Server::launch(support::fresh_dir(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    let deadline = Instant::now() + WITHIN;
    let result = loop {
        match binary_client(expired.binary_addr.unwrap(), &ca_pem, None) {
            Err(ClientError::Connect { .. }) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            other => break other,
        }
    };
    assert_tls_error(result, &["certificate", "Expired"]);
    let https = format!("https://127.0.0.1:{}", expired.addr.port());
    let (code, _, stderr) = tqx(&["queues", "--server", &https, "--tls-ca", path_str(&ca_pem)]);
    assert_eq!(code, 1, "a TLS failure exits 1: {stderr}");
    assert!(stderr.contains("Expired"), "{stderr}");
}

/// A client that speaks plain HTTP or the binary protocol to a TLS port is
/// closed at once (rustls refuses the first bytes), not after a timeout:
/// both timeouts are far above the test's bound.
#[test]
fn plain_text_to_a_tls_port_is_closed_promptly() {
    let files = Files::new();
    let ca = Ca::new("tqx test CA");
    let ca_pem = files.ca("ca.pem", &ca);
    let (cert, key) = files.pair("server", &ca.issue(false, false));
    let args = tls_args(&cert, &key, &["--request-deadline-ms", "600000", "--idle-timeout-ms", "600000"]);
    let server = start_tls(&args, &ca_pem, None);

    let mut http = TcpStream::connect(server.addr).unwrap();
    http.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    assert!(wait_closed(&mut http, WITHIN) < Duration::from_secs(5));
    let mut binary = TcpStream::connect(server.binary_addr.unwrap()).unwrap();
    let mut hello = Vec::new();
    tqx_client::wire::Request::Hello { version_min: 1, version_max: 1 }.encode(1, &mut hello);
    binary.write_all(&hello).unwrap();
    assert!(wait_closed(&mut binary, WITHIN) < Duration::from_secs(5));
    server.assert_healthy_tls(&ca_pem);
}

/// The request deadline covers the handshake from its first byte: a client
/// that stops half-way through its ClientHello, or after it (never sending
/// its Finished), is closed once the deadline passes, not before; one that
/// disconnects mid-handshake costs nothing; the server serves others
/// throughout.
#[test]
fn a_stalled_handshake_is_closed_by_the_request_deadline_and_others_are_served() {
    let files = Files::new();
    let ca = Ca::new("tqx test CA");
    let ca_pem = files.ca("ca.pem", &ca);
    let (cert, key) = files.pair("server", &ca.issue(false, false));
    let args = tls_args(&cert, &key, &["--request-deadline-ms", "1000", "--idle-timeout-ms", "600000"]);
    let server = start_tls(&args, &ca_pem, None);

    let start = Instant::now();
    // Half a ClientHello: the read stops inside its record.
    let hello = client_hello(&ca_pem, tqx_client::tls::ALPN_HTTP);
    let mut half = TcpStream::connect(server.addr).unwrap();
    half.write_all(&hello[..hello.len() / 2]).unwrap();
    // A whole ClientHello, then silence: the server answers and waits for a
    // Finished that never comes (nothing is left unfinished in a record).
    let mut whole = TcpStream::connect(server.binary_addr.unwrap()).unwrap();
    whole.write_all(&client_hello(&ca_pem, tqx_client::tls::ALPN_BINARY)).unwrap();
    let mut abandoned = TcpStream::connect(server.addr).unwrap();
    abandoned.write_all(&hello[..10]).unwrap();
    drop(abandoned);
    server.assert_healthy_tls(&ca_pem);

    // Each close is seen within a poll of when it happened.
    let mut closed_after = [None, None];
    while closed_after.iter().any(Option::is_none) && start.elapsed() < WITHIN {
        for (stream, after) in [&mut half, &mut whole].into_iter().zip(&mut closed_after) {
            if after.is_none() && is_closed(stream) {
                *after = Some(start.elapsed());
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    for (what, after) in ["half a ClientHello", "no Finished"].iter().zip(closed_after) {
        let after = after.unwrap_or_else(|| panic!("{what}: not closed within {WITHIN:?}"));
        // Their first bytes left after `start`: the deadline cannot have passed before 1 s.
        assert!(after >= Duration::from_millis(1000), "{what}: closed after {after:?}, before the deadline");
    }
    server.assert_healthy_tls(&ca_pem);
}

/// With `--tls-client-ca`, a client certificate signed by that CA is
/// required: without one, or with one from another CA, the handshake is
/// refused and the client's error names its certificate; with one, both
/// protocols serve (curl included).
#[test]
fn mutual_tls_requires_a_client_certificate_signed_by_the_client_ca() {
    let files = Files::new();
    let ca = Ca::new("tqx test CA");
    let ca_pem = files.ca("ca.pem", &ca);
    let client_ca = Ca::new("tqx client CA");
    let client_ca_pem = files.ca("client-ca.pem", &client_ca);
    let (cert, key) = files.pair("server", &ca.issue(false, false));
    let (client_cert, client_key) = files.pair("client", &client_ca.issue(true, false));
    let (stranger_cert, stranger_key) = files.pair("stranger", &Ca::new("another CA").issue(true, false));
    let identity = Some((client_cert.as_path(), client_key.as_path()));
    let args = tls_args(&cert, &key, &["--tls-client-ca", path_str(&client_ca_pem)]);
    let server = start_tls(&args, &ca_pem, identity);
    let binary = server.binary_addr.unwrap();

    // With the certificate: both protocols.
    let client = binary_client(binary, &ca_pem, identity).unwrap();
    assert!(client.ping().unwrap());
    let output = tqx_testkit::output_within(
        Command::new("curl").args([
            "-sS",
            "--cacert",
            path_str(&ca_pem),
            "--cert",
            path_str(&client_cert),
            "--key",
            path_str(&client_key),
            format!("https://127.0.0.1:{}/healthz", server.addr.port()).as_str(),
        ]),
        WITHIN,
    )
    .unwrap();
    assert!(output.stdout.contains("\"ok\""), "curl with a client certificate: {}{}", output.stdout, output.stderr);

    // Without one, or with a stranger's.
    assert_tls_error(binary_client(binary, &ca_pem, None), &["client certificate"]);
    let stranger = Some((stranger_cert.as_path(), stranger_key.as_path()));
    assert_tls_error(binary_client(binary, &ca_pem, stranger), &["client certificate"]);
    let refused = tls_connect(server.addr, &http_config(&ca_pem, None))
        .and_then(|mut stream| http(&mut stream, "GET", "/healthz", None));
    let error = refused.expect_err("no client certificate");
    assert!(tqx_client::tls::describe_failure(&error).is_some_and(|r| r.contains("client certificate")), "{error}");
    let https = format!("https://127.0.0.1:{}", server.addr.port());
    let (code, _, stderr) = tqx(&["queues", "--server", &https, "--tls-ca", path_str(&ca_pem)]);
    assert_eq!(code, 1, "a TLS failure exits 1: {stderr}");
    assert!(stderr.contains("client certificate"), "{stderr}");
    let (code, stdout, stderr) = tqx(&[
        "queues",
        "--server",
        &https,
        "--tls-ca",
        path_str(&ca_pem),
        "--tls-cert",
        path_str(&client_cert),
        "--tls-key",
        path_str(&client_key),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

/// SIGHUP re-reads the certificate and key: a connection made before keeps
/// working, new handshakes get the new certificate (a client trusting only
/// the old CA is refused, one trusting the new CA is served); a bad file
/// keeps the certificate in use and says why in one warning.
#[test]
fn sighup_reloads_the_certificate_for_new_handshakes_and_keeps_established_connections() {
    let files = Files::new();
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let old_pem = files.ca("old-ca.pem", &old_ca);
    let new_pem = files.ca("new-ca.pem", &new_ca);
    let (cert, key) = files.pair("server", &old_ca.issue(false, false));
    let server = start_tls(&tls_args(&cert, &key, &[]), &old_pem, None);
    let mut established = tls_connect(server.addr, &http_config(&old_pem, None)).unwrap();
    assert_eq!(http(&mut established, "GET", "/healthz", None).unwrap().0, 200);
    let binary = binary_client(server.binary_addr.unwrap(), &old_pem, None).unwrap();

    files.pair("server", &new_ca.issue(false, false));
    server.signal(libc::SIGHUP);
    wait_for_log(&server, "reloaded the TLS certificate and key");
    assert_eq!(http(&mut established, "GET", "/healthz", None).unwrap().0, 200, "the old connection still works");
    assert!(binary.ping().unwrap(), "the old binary connection still works");
    assert!(tls_connect(server.addr, &http_config(&old_pem, None)).is_err(), "a new handshake has the new certificate");
    let mut fresh = tls_connect(server.addr, &http_config(&new_pem, None)).unwrap();
    assert_eq!(http(&mut fresh, "GET", "/healthz", None).unwrap().0, 200);

    // A key that is not the certificate's: refused, the new certificate stays.
    files.write("server.key", &KeyPair::generate().unwrap().serialize_pem());
    server.signal(libc::SIGHUP);
    wait_for_log(&server, "TLS reload failed, still using the previous certificate and key");
    assert!(server.stderr().contains(path_str(&key)), "the warning names the file: {}", server.stderr());
    let mut after = tls_connect(server.addr, &http_config(&new_pem, None)).unwrap();
    assert_eq!(http(&mut after, "GET", "/healthz", None).unwrap().0, 200);
    assert_eq!(http(&mut established, "GET", "/healthz", None).unwrap().0, 200);
}

/// Safe by default: a listener on an address other than loopback needs TLS
/// or tokens, or `--insecure` on purpose; the refusal says how. TLS files
/// that cannot be used refuse the start and name the file.
#[test]
fn a_non_loopback_listener_without_tls_or_tokens_is_refused_unless_insecure() {
    let data = TempDir::create(tqx_testkit::fresh_path("tqx-tls-refusal")).unwrap();
    let (status, _, stderr) =
        support::serve_until_exit(&["--http", "0.0.0.0:0", "--binary", "127.0.0.1:0"], data.path());
    assert!(status.is_some_and(|s| !s.success()), "{status:?}: {stderr}");
    for words in ["refusing to listen on --http 0.0.0.0:0", "--tls-cert", "--tokens", "--insecure"] {
        assert!(stderr.contains(words), "{stderr:?} should say {words:?}");
    }

    let bin = env!("CARGO_BIN_EXE_tqx");
    let launch = |args: &[&str]| {
        tqx_testkit::Launch::new(bin, data.path().join("data"), data.path().join("log"))
            .http("0.0.0.0:0")
            .args(["--reactors", "1", "--workers", "1", "--no-pin"])
            .args(args.iter().copied())
            .start(WITHIN)
    };
    let insecure = launch(&["--insecure"]).expect("--insecure starts");
    insecure.stop(WITHIN).unwrap();

    let files = Files::new();
    let ca = Ca::new("tqx test CA");
    let (cert, key) = files.pair("server", &ca.issue(false, false));
    let with_tls = launch(&tls_args(&cert, &key, &[]).iter().map(String::as_str).collect::<Vec<_>>());
    with_tls.expect("TLS starts").stop(WITHIN).unwrap();

    // A key that is not the certificate's, and a file that is not there.
    let stranger_key = files.write("stranger.key", &KeyPair::generate().unwrap().serialize_pem());
    let missing = files.dir.path().join("missing.pem");
    for (cert, key, words) in [(&cert, &stranger_key, "stranger.key"), (&missing, &key, "missing.pem")] {
        let args = tls_args(cert, key, &["--http", "127.0.0.1:0", "--binary", "127.0.0.1:0"]);
        let (status, _, stderr) =
            support::serve_until_exit(&args.iter().map(String::as_str).collect::<Vec<_>>(), data.path());
        assert!(status.is_some_and(|s| !s.success()), "{status:?}: {stderr}");
        assert!(stderr.contains(words), "{stderr:?} should name {words}");
    }
}

impl Server {
    /// The server still serves a fresh TLS client on both protocols.
    fn assert_healthy_tls(&self, ca: &Path) {
        let mut stream = tls_connect(self.addr, &http_config(ca, None)).unwrap();
        assert_eq!(http(&mut stream, "GET", "/healthz", None).unwrap().0, 200);
        let client = binary_client(self.binary_addr.unwrap(), ca, None).unwrap();
        assert!(client.ping().unwrap());
    }
}

/// Tokens and TLS together, as a deployment beyond loopback runs them: over
/// TLS a request without a token is refused (HTTP 401; the binary client's
/// connect fails `unauthenticated`), and the command line and the Rust
/// client send their token inside the TLS session on both protocols.
#[test]
fn tokens_are_required_and_accepted_over_tls_on_both_protocols() {
    let files = Files::new();
    let ca = Ca::new("tqx test CA");
    let ca_pem = files.ca("ca.pem", &ca);
    let (cert, key) = files.pair("server", &ca.issue(false, false));
    let tokens = files.dir.path().join("tokens");
    let (code, token, stderr) = tqx(&["token", "create", "--scope", "produce", "--file", path_str(&tokens)]);
    assert_eq!(code, 0, "{stderr}");
    let token = token.trim().to_string();
    let server = start_tls(&tls_args(&cert, &key, &["--tokens", path_str(&tokens)]), &ca_pem, None);

    let mut stream = tls_connect(server.addr, &http_config(&ca_pem, None)).unwrap();
    let (status, body) = http(&mut stream, "POST", "/v1/queues/q/tasks", Some(r#"{"payload":1}"#)).unwrap();
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));

    let ca_arg = path_str(&ca_pem);
    let https = format!("https://127.0.0.1:{}", server.addr.port());
    let (code, _, stderr) = tqx(&["enqueue", "q", "1", "--server", &https, "--tls-ca", ca_arg]);
    assert_eq!(code, 6, "refused without a token: exit 6, auth: {stderr}");
    assert!(stderr.contains("requires a token"), "{stderr}");
    let (code, stdout, stderr) = tqx(&["enqueue", "q", "1", "--server", &https, "--tls-ca", ca_arg, "--token", &token]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"id\""), "{stdout}");

    let binary = server.binary_addr.unwrap();
    match binary_client(binary, &ca_pem, None).and_then(|c| c.enqueue("q", TaskSpec::default())) {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, tqx_wire::ErrorCode::Unauthenticated),
        other => panic!("a binary request without a token over TLS: {other:?}"),
    }
    let options = ClientOptions {
        connect_timeout_ms: 5_000,
        reconnect_attempts_max: 1,
        tls: Some(ClientTls::from_pem_files(&ca_pem, None).unwrap()),
        token: Some(tqx_client::Token::new(token.clone())),
        ..ClientOptions::default()
    };
    let client = tqx_client::blocking::Client::connect(&binary.to_string(), options).unwrap();
    client.enqueue("q", TaskSpec { payload: Bytes::from_static(b"2"), ..TaskSpec::default() }).unwrap();
}

// ---- client certificates mapped to scopes ------------------------------------------

/// A mutual-TLS server whose token file holds a `produce` token and, written
/// by `tqx token create --cert`, the `worker` client certificate's line:
/// `consume` on `orders.*`. `stranger` is signed by the same client CA but
/// has no line.
struct Mapped {
    files: Files,
    server: Server,
    ca: PathBuf,
    tokens: PathBuf,
    producer: String,
    worker: (PathBuf, PathBuf),
    stranger: (PathBuf, PathBuf),
}

impl Mapped {
    fn start() -> Mapped {
        let files = Files::new();
        let ca = Ca::new("tqx test CA");
        let ca_pem = files.ca("ca.pem", &ca);
        let client_ca = Ca::new("tqx client CA");
        let client_ca_pem = files.ca("client-ca.pem", &client_ca);
        let (cert, key) = files.pair("server", &ca.issue(false, false));
        let worker = files.pair("worker", &client_ca.issue(true, false));
        let stranger = files.pair("stranger", &client_ca.issue(true, false));
        let tokens = files.dir.path().join("tokens");
        let (code, producer, stderr) = tqx(&["token", "create", "--scope", "produce", "--file", path_str(&tokens)]);
        assert_eq!(code, 0, "{stderr}");
        let create = ["token", "create", "--scope", "consume", "--queues", "orders.*", "--name", "worker"];
        let (code, stdout, stderr) =
            tqx(&[&create[..], &["--cert", path_str(&worker.0), "--file", path_str(&tokens)]].concat());
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(stdout, "", "no token is made for a certificate");

        let args = tls_args(&cert, &key, &["--tls-client-ca", path_str(&client_ca_pem), "--tokens", path_str(&tokens)]);
        let server = start_tls(&args, &ca_pem, Some((&worker.0, &worker.1)));
        Mapped { files, server, ca: ca_pem, tokens, producer: producer.trim().to_string(), worker, stranger }
    }

    fn identity(pair: &(PathBuf, PathBuf)) -> Option<(&Path, &Path)> {
        Some((pair.0.as_path(), pair.1.as_path()))
    }

    fn http(&self, pair: &(PathBuf, PathBuf)) -> TlsStream {
        tls_connect(self.server.addr, &http_config(&self.ca, Mapped::identity(pair))).unwrap()
    }

    /// The binary client presenting `pair`'s certificate, and no token.
    fn binary(&self, pair: &(PathBuf, PathBuf)) -> tqx_client::blocking::Client {
        binary_client(self.server.binary_addr.unwrap(), &self.ca, Mapped::identity(pair)).unwrap()
    }
}

const DEQUEUE_ORDERS: &str = r#"{"queues":["orders.x"]}"#;

#[track_caller]
fn assert_server_error<T: std::fmt::Debug>(
    result: Result<T, ClientError>,
    expected: tqx_wire::ErrorCode,
    words: &[&str],
) {
    match result {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(code, expected, "{message}");
            for word in words {
                assert!(message.contains(word), "{message:?} should mention {word:?}");
            }
        }
        other => panic!("expected {expected:?}, got {other:?}"),
    }
}

/// A client certificate the token file maps to `consume` on `orders.*`
/// authenticates its connections without a token, on both protocols: it
/// dequeues from `orders.x` and gets `403` / `forbidden` naming the scope for
/// an enqueue and for another queue. A Bearer token replaces it for its
/// request. A certificate from the same CA without a line still needs a token.
/// The line `tqx token create --cert` wrote carries openssl's fingerprint.
#[test]
fn a_mapped_client_certificate_has_its_scopes_without_a_token_on_both_protocols() {
    let mapped = Mapped::start();
    let openssl = tqx_testkit::output_within(
        Command::new("openssl").args(["x509", "-noout", "-fingerprint", "-sha256", "-in", path_str(&mapped.worker.0)]),
        WITHIN,
    )
    .unwrap();
    let fingerprint = openssl.stdout.trim().split_once('=').expect("openssl prints NAME=FINGERPRINT").1.to_string();
    let file = std::fs::read_to_string(&mapped.tokens).unwrap();
    let line = format!("cert-sha256={fingerprint} scopes=consume queues=orders.* name=worker\n");
    assert!(file.ends_with(&line), "the line carries openssl's fingerprint {fingerprint}: {file}");

    // HTTP, presenting the worker's certificate and no token.
    let mut worker = mapped.http(&mapped.worker);
    let enqueue = |stream: &mut TlsStream, token| {
        http_with_token(stream, "POST", "/v1/queues/orders.x/tasks", Some(r#"{"payload":1}"#), token).unwrap()
    };
    let (status, body) = enqueue(&mut worker, None);
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("forbidden") && body.contains("produce scope") && body.contains("orders.x"), "{body}");
    // A Bearer token stands for its own request, on the same connection.
    for _ in 0..3 {
        let (status, body) = enqueue(&mut worker, Some(&mapped.producer));
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    }
    assert_eq!(enqueue(&mut worker, None).0, 403, "the next request without a token has the certificate's grant");
    let (status, body) = http(&mut worker, "POST", "/v1/dequeue", Some(DEQUEUE_ORDERS)).unwrap();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"id\""), "a task was leased: {body}");
    let (status, body) = http(&mut worker, "POST", "/v1/dequeue", Some(r#"{"queues":["billing"]}"#)).unwrap();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("consume scope") && body.contains("billing"), "{body}");

    // curl presenting the certificate.
    let output = tqx_testkit::output_within(
        Command::new("curl")
            .args(["-sS", "--cacert", path_str(&mapped.ca), "--cert", path_str(&mapped.worker.0)])
            .args(["--key", path_str(&mapped.worker.1), "-H", "Content-Type: application/json"])
            .args(["-d", DEQUEUE_ORDERS, "-w", "\n%{http_code}"])
            .arg(format!("https://127.0.0.1:{}/v1/dequeue", mapped.server.addr.port())),
        WITHIN,
    )
    .unwrap();
    assert!(
        output.stdout.ends_with("\n200") && output.stdout.contains("\"id\""),
        "curl: {}{}",
        output.stdout,
        output.stderr
    );

    // The binary protocol through the Rust client, no auth sent.
    let client = mapped.binary(&mapped.worker);
    assert_eq!(client.dequeue(&["orders.x"], 1, None, 0).unwrap().len(), 1);
    let task = || TaskSpec { payload: Bytes::from_static(b"1"), ..TaskSpec::default() };
    let forbidden = tqx_wire::ErrorCode::Forbidden;
    assert_server_error(client.enqueue("orders.x", task()), forbidden, &["produce scope", "orders.x"]);
    assert_server_error(client.dequeue(&["billing"], 1, None, 0), forbidden, &["consume scope", "billing"]);

    // A certificate the client CA signed but the token file does not name: a token is needed, as without one.
    let mut stranger = mapped.http(&mapped.stranger);
    let (status, body) = http(&mut stranger, "POST", "/v1/dequeue", Some(DEQUEUE_ORDERS)).unwrap();
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    assert_eq!(enqueue(&mut stranger, Some(&mapped.producer)).0, 201);
    let unauthenticated = tqx_wire::ErrorCode::Unauthenticated;
    assert_server_error(mapped.binary(&mapped.stranger).dequeue(&["orders.x"], 1, None, 0), unauthenticated, &[]);
}

/// A reload that removes the certificate's line revokes it on connections
/// already open, at their next request, on both protocols.
#[test]
fn sighup_removing_a_certificate_line_revokes_it_on_open_connections() {
    let mapped = Mapped::start();
    let mut http_worker = mapped.http(&mapped.worker);
    // The queue exists (a dequeue of a queue that does not is refused).
    let enqueue = Some(r#"{"payload":1}"#);
    let created =
        http_with_token(&mut http_worker, "POST", "/v1/queues/orders.x/tasks", enqueue, Some(&mapped.producer));
    assert_eq!(created.unwrap().0, 201);
    assert_eq!(http(&mut http_worker, "POST", "/v1/dequeue", Some(DEQUEUE_ORDERS)).unwrap().0, 200);
    let binary_worker = mapped.binary(&mapped.worker);
    assert!(binary_worker.dequeue(&["orders.x"], 1, None, 0).is_ok());

    let file = std::fs::read_to_string(&mapped.tokens).unwrap();
    let kept: String =
        file.lines().filter(|line| !line.starts_with("cert-sha256=")).map(|line| format!("{line}\n")).collect();
    assert_ne!(kept, file);
    mapped.files.write("tokens", &kept);
    mapped.server.signal(libc::SIGHUP);
    wait_for_log(&mapped.server, "tokens reloaded");

    let (status, body) = http(&mut http_worker, "POST", "/v1/dequeue", Some(DEQUEUE_ORDERS)).unwrap();
    assert_eq!(status, 401, "the same connection, revoked: {}", String::from_utf8_lossy(&body));
    let unauthenticated = tqx_wire::ErrorCode::Unauthenticated;
    assert_server_error(binary_worker.dequeue(&["orders.x"], 1, None, 0), unauthenticated, &[]);
}

/// `cert-sha256=` lines without `--tls-client-ca` can never match (no client
/// presents a certificate): the server says so at start, and not when mutual
/// TLS is on.
#[test]
fn certificate_lines_without_a_client_ca_are_warned_about_at_start() {
    const WARNING: &str = "without --tls-client-ca no client presents one";
    let mapped = Mapped::start();
    wait_for_log(&mapped.server, "tokens loaded");
    assert!(!mapped.server.stderr().contains(WARNING), "mutual TLS is on: {}", mapped.server.stderr());

    let ca = Ca::new("tqx test CA");
    let ca_pem = mapped.files.ca("ca-2.pem", &ca);
    let (cert, key) = mapped.files.pair("server-2", &ca.issue(false, false));
    let server = start_tls(&tls_args(&cert, &key, &["--tokens", path_str(&mapped.tokens)]), &ca_pem, None);
    wait_for_log(&server, WARNING);
}
