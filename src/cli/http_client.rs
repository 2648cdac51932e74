//! A small blocking HTTP/1.1 client for the `tqx` client subcommands.
//!
//! One request per connection (`Connection: close`), over `std::net::TcpStream`:
//! `http://`, or `https://` through rustls (`rustls::StreamOwned`) with the CA
//! given to `--tls-ca` (docs/security.md). The response is read whole: status line, headers, and a body
//! delimited by `Content-Length` or by the server closing the connection (chunked
//! bodies are refused: the TaskQueueX server never sends them).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long establishing a TCP connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The read/write timeout of a request that the server answers at once.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response accepted, so a misbehaving peer cannot exhaust memory.
pub const RESPONSE_BYTES_MAX: usize = 256 << 20;
/// Headers parsed per response.
const HEADERS_COUNT_MAX: usize = 64;

/// A parsed `http[s]://host[:port][/prefix]` server address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerUrl {
    /// `https://`: the request goes over TLS.
    pub tls: bool,
    /// Host as written (an IPv6 literal keeps its brackets).
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash (usually empty).
    pub base_path: String,
}

impl ServerUrl {
    /// Parses `http[s]://host[:port][/prefix]`; a missing scheme means `http://`, a
    /// missing port means 80 (443 for `https://`).
    pub fn parse(url: &str) -> Result<ServerUrl, ClientError> {
        let invalid = |why: &str| ClientError::InvalidUrl { url: url.to_string(), reason: why.to_string() };
        let trimmed = url.trim();
        let (tls, rest) = match trimmed.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest),
            Some((scheme, _)) => {
                return Err(invalid(&format!("unsupported scheme {scheme:?}; use http:// or https://")))
            }
            None => (false, trimmed),
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if path.contains(['?', '#']) {
            return Err(invalid("a query or fragment is not allowed"));
        }
        if authority.contains('@') {
            return Err(invalid("user information is not supported"));
        }
        let (host, port) = if let Some(after) = authority.strip_prefix('[') {
            let Some(end) = after.find(']') else { return Err(invalid("unclosed '[' in an IPv6 address")) };
            let host = &authority[..end + 2];
            match &after[end + 1..] {
                "" => (host, None),
                tail => match tail.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(invalid("unexpected text after the IPv6 address")),
                },
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(invalid("no host"));
        }
        if host.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(invalid("the host contains whitespace"));
        }
        let port = match port {
            None => default_port(tls),
            Some(text) => match text.parse::<u16>() {
                Ok(port) if port != 0 && text.bytes().all(|b| b.is_ascii_digit()) => port,
                _ => return Err(invalid(&format!("bad port {text:?}: expected 1 to 65535"))),
            },
        };
        let base_path = path.trim_end_matches('/').to_string();
        if base_path.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(invalid("the path contains whitespace"));
        }
        Ok(ServerUrl { tls, host: host.to_string(), port, base_path })
    }

    /// The `Host` header value.
    pub fn authority(&self) -> String {
        if self.port == default_port(self.tls) {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn socket_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        Ok((host, self.port).to_socket_addrs()?.collect())
    }
}

fn default_port(tls: bool) -> u16 {
    if tls {
        443
    } else {
        80
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}{}", self.host, self.port, self.base_path)
    }
}

/// A complete HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Header names lowercased, values as sent (lossy UTF-8), in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Debug)]
pub enum ClientError {
    /// The server address is not a usable `http://` URL.
    InvalidUrl { url: String, reason: String },
    /// No TCP connection could be made (name resolution, refused, timed out).
    Connect { server: String, source: io::Error },
    /// The connection failed while sending or receiving (including a timeout).
    Io { server: String, source: io::Error },
    /// The peer answered something that is not a well-formed HTTP response.
    BadResponse { server: String, reason: String },
    /// TLS failed: a certificate (the server's, or ours) was refused, a PEM
    /// file could not be used, or the handshake failed; `reason` says which.
    Tls { server: String, reason: String },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::InvalidUrl { url, reason } => write!(f, "invalid server URL {url:?}: {reason}"),
            ClientError::Connect { server, source } => {
                write!(
                    f,
                    "cannot connect to {server}: {source} (is `tqx serve` running there? set --server or TQX_SERVER)"
                )
            }
            ClientError::Io { server, source } if is_timeout(source) => {
                write!(f, "no complete response from {server} in time: {source}")
            }
            ClientError::Io { server, source } => write!(f, "connection to {server} failed: {source}"),
            ClientError::BadResponse { server, reason } => write!(f, "bad HTTP response from {server}: {reason}"),
            ClientError::Tls { server, reason } => write!(f, "TLS to {server}: {reason}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Connect { source, .. } | ClientError::Io { source, .. } => Some(source),
            ClientError::InvalidUrl { .. } | ClientError::BadResponse { .. } | ClientError::Tls { .. } => None,
        }
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)
}

/// Percent-encodes one path segment (everything but `A-Z a-z 0-9 - . _ ~ :`), so
/// a name with `/`, `?` or spaces stays one segment and the server can refuse it
/// by name instead of routing it elsewhere.
pub fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Sends one request to `server` (`http://host:port`) and returns the whole
/// response. `timeout` bounds each read and write and the whole exchange after
/// connecting; connecting itself is bounded by [`CONNECT_TIMEOUT`].
pub fn request(
    server: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let url = ServerUrl::parse(server)?;
    request_url(&url, None, method, path, body, None, timeout)
}

/// The TLS configuration for `https://` URLs: trusts the CAs in `ca`, presents
/// `identity` (certificate and key PEM files) for mutual TLS, offers ALPN
/// `http/1.1`.
pub fn tls_config(
    ca: &std::path::Path,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    tqx_client::tls::client_config(ca, identity, tqx_client::tls::ALPN_HTTP)
}

/// [`request`] with an already parsed server URL (an `https://` URL needs
/// `tls`), and the API token to send (`Authorization: Bearer`), if any.
pub fn request_url(
    url: &ServerUrl,
    tls: Option<&Arc<rustls::ClientConfig>>,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    token: Option<&str>,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let server = url.to_string();
    let socket = connect(url).map_err(|source| ClientError::Connect { server: server.clone(), source })?;
    let io_error = |source: io::Error| match tqx_client::tls::describe_failure(&source) {
        Some(reason) => ClientError::Tls { server: server.clone(), reason },
        None => ClientError::Io { server: server.clone(), source },
    };
    let tls_error = |reason: String| ClientError::Tls { server: server.clone(), reason };
    let deadline = Instant::now() + timeout;
    socket.set_write_timeout(Some(timeout)).map_err(io_error)?;
    let _ = socket.set_nodelay(true);
    let mut stream = match (url.tls, tls) {
        (false, _) => Conn::Plain(socket),
        (true, None) => {
            return Err(tls_error(
                "an https:// server needs --tls-ca PEM (the CA that signed its certificate)".to_string(),
            ))
        }
        (true, Some(config)) => {
            let name = tqx_client::tls::server_name(&format!("{}:{}", url.host, url.port)).map_err(tls_error)?;
            let session = rustls::ClientConnection::new(config.clone(), name).map_err(|e| tls_error(e.to_string()))?;
            Conn::Tls(Box::new(rustls::StreamOwned::new(session, socket)))
        }
    };
    let request = render_request(url, method, path, body, token);
    stream.write_all(&request).and_then(|()| stream.flush()).map_err(io_error)?;
    read_response(&mut stream, method, deadline).map_err(|e| match e {
        ReadError::Io(source) => io_error(source),
        ReadError::Bad(reason) => ClientError::BadResponse { server: server.clone(), reason },
    })
}

/// A connection: plain TCP, or TLS over it.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn socket(&self) -> &TcpStream {
        match self {
            Conn::Plain(socket) => socket,
            Conn::Tls(stream) => &stream.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(socket) => socket.read(buffer),
            // The server closes after its response (`Connection: close`)
            // without a close_notify; the response is framed by its
            // Content-Length, so a cut is still seen.
            Conn::Tls(stream) => match stream.read(buffer) {
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(socket) => socket.write(buffer),
            Conn::Tls(stream) => stream.write(buffer),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(socket) => socket.flush(),
            Conn::Tls(stream) => stream.flush(),
        }
    }
}

fn connect(url: &ServerUrl) -> io::Result<TcpStream> {
    let addrs = url.socket_addrs()?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{} resolves to no address", url.host));
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(error) => last = error,
        }
    }
    Err(last)
}

/// The request's bytes: request line, `Host`, `Authorization` (with a token),
/// `Content-Length` (when there is a body, or for POST/PUT), `Connection:
/// close`, then the body.
pub fn render_request(url: &ServerUrl, method: &str, path: &str, body: Option<&[u8]>, token: Option<&str>) -> Vec<u8> {
    let body = body.unwrap_or_default();
    let mut out = Vec::with_capacity(160 + body.len());
    let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
    out.extend_from_slice(format!("{method} {}{path} HTTP/1.1\r\n", url.base_path).as_bytes());
    out.extend_from_slice(format!("Host: {}\r\n", url.authority()).as_bytes());
    out.extend_from_slice(concat!("User-Agent: tqx/", env!("CARGO_PKG_VERSION"), "\r\n").as_bytes());
    out.extend_from_slice(b"Accept: application/json\r\n");
    if let Some(token) = token {
        out.extend_from_slice(format!("Authorization: Bearer {token}\r\n").as_bytes());
    }
    if !body.is_empty() {
        out.extend_from_slice(b"Content-Type: application/json\r\n");
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(body);
    out
}

enum ReadError {
    Io(io::Error),
    Bad(String),
}

fn read_response(stream: &mut Conn, method: &str, deadline: Instant) -> Result<Response, ReadError> {
    let mut buffer = Vec::with_capacity(8192);
    let mut chunk = [0u8; 16384];
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ReadError::Io(io::Error::new(io::ErrorKind::TimedOut, "the response timed out")));
        }
        stream.socket().set_read_timeout(Some(remaining)).map_err(ReadError::Io)?;
        let read = match stream.read(&mut chunk) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A reset after the server sent its full reply (it closed with our
            // bytes unread): keep what arrived if it is complete.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !buffer.is_empty() => 0,
            Err(e) => return Err(ReadError::Io(e)),
        };
        let eof = read == 0;
        buffer.extend_from_slice(&chunk[..read]);
        if buffer.len() > RESPONSE_BYTES_MAX {
            return Err(ReadError::Bad(format!("the response is larger than {RESPONSE_BYTES_MAX} bytes")));
        }
        match parse_response(&buffer, method == "HEAD", eof).map_err(ReadError::Bad)? {
            Some(response) => return Ok(response),
            None if eof => {
                let reason = if buffer.is_empty() {
                    "the server closed the connection without answering".to_string()
                } else {
                    "the server closed the connection before the response was complete".to_string()
                };
                return Err(ReadError::Bad(reason));
            }
            None => {}
        }
    }
}

/// Parses a response from the bytes received so far. `Ok(None)`: incomplete,
/// read more. `eof`: the peer has closed, so a body without `Content-Length`
/// ends here. `head_request`: the response to HEAD has no body.
pub fn parse_response(bytes: &[u8], head_request: bool, eof: bool) -> Result<Option<Response>, String> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(format!("cannot parse the status line or headers: {error}")),
    };
    let status = parsed.code.ok_or("no status code")?;
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).trim().to_string()))
        .collect();
    let rest = &bytes[head_len..];

    if (100..200).contains(&status) {
        // An interim response (100 Continue): the real one follows.
        return parse_response(rest, head_request, eof);
    }
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && !v.eq_ignore_ascii_case("identity")) {
        return Err("chunked or encoded transfer is not supported".to_string());
    }
    let mut length = None;
    for (name, value) in &headers {
        if name == "content-length" {
            let value: u64 = value.parse().map_err(|_| format!("bad Content-Length {value:?}"))?;
            if length.is_some_and(|l| l != value) {
                return Err("conflicting Content-Length headers".to_string());
            }
            length = Some(value);
        }
    }
    let body = if head_request || status == 204 || status == 304 {
        Vec::new()
    } else if let Some(length) = length {
        if length > RESPONSE_BYTES_MAX as u64 {
            return Err(format!("Content-Length {length} is larger than {RESPONSE_BYTES_MAX} bytes"));
        }
        let length = length as usize;
        if rest.len() < length {
            return Ok(None);
        }
        rest[..length].to_vec()
    } else if eof {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Response { status, headers, body }))
}

/// Re-indents JSON text for a terminal (two spaces, like `serde_json`'s pretty
/// printer) without re-encoding it: keys keep the server's order and numbers keep
/// their exact text (a payload is returned as it was sent). `None` if `text` is
/// not valid JSON.
pub fn pretty_json(text: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde::de::IgnoredAny>(text).ok()?;
    let text = std::str::from_utf8(text).ok()?;
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    let mut indent = 0usize;
    let newline = |out: &mut String, indent: usize| {
        out.push('\n');
        for _ in 0..indent {
            out.push_str("  ");
        }
    };
    let mut chars = text.chars().peekable();
    let (mut in_string, mut escaped) = (false, false);
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
                out.push(c);
                if let Some(close) = chars.next_if(|&next| next == if c == '{' { '}' } else { ']' }) {
                    out.push(close);
                } else {
                    indent += 1;
                    newline(&mut out, indent);
                }
            }
            '}' | ']' => {
                indent = indent.saturating_sub(1);
                newline(&mut out, indent);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, indent);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    fn url(host: &str, port: u16, base_path: &str) -> ServerUrl {
        ServerUrl { tls: false, host: host.to_string(), port, base_path: base_path.to_string() }
    }

    #[test]
    fn parses_urls() {
        assert_eq!(ServerUrl::parse("http://127.0.0.1:7700").unwrap(), url("127.0.0.1", 7700, ""));
        assert_eq!(ServerUrl::parse("http://127.0.0.1:7700/").unwrap(), url("127.0.0.1", 7700, ""));
        assert_eq!(ServerUrl::parse("HTTP://localhost").unwrap(), url("localhost", 80, ""));
        assert_eq!(ServerUrl::parse("localhost:8080").unwrap(), url("localhost", 8080, ""));
        assert_eq!(ServerUrl::parse(" http://q.example:1/tqx/ ").unwrap(), url("q.example", 1, "/tqx"));
        assert_eq!(ServerUrl::parse("http://[::1]:7700").unwrap(), url("[::1]", 7700, ""));
        assert_eq!(ServerUrl::parse("http://[::1]").unwrap(), url("[::1]", 80, ""));
        assert_eq!(ServerUrl::parse("http://[::1]:7700").unwrap().to_string(), "http://[::1]:7700");
        assert_eq!(url("h", 80, "").authority(), "h");
        assert_eq!(url("h", 7700, "").authority(), "h:7700");
        let https = ServerUrl::parse("https://q.example").unwrap();
        assert_eq!((https.tls, https.port, https.authority()), (true, 443, "q.example".to_string()));
        assert_eq!(ServerUrl::parse("https://[::1]:7700").unwrap().to_string(), "https://[::1]:7700");
    }

    #[test]
    fn refuses_bad_urls() {
        for bad in [
            "ftp://x",
            "http://",
            "http://:7700",
            "http://host:",
            "http://host:0",
            "http://host:65536",
            "http://host:+80",
            "http://host:port",
            "http://[::1",
            "http://[::1]x",
            "http://user@host",
            "http://host/?q=1",
            "http://ho st:1",
            "",
        ] {
            let error = ServerUrl::parse(bad).expect_err(bad);
            assert!(matches!(error, ClientError::InvalidUrl { .. }), "{bad}: {error:?}");
            assert!(error.to_string().starts_with("invalid server URL"), "{error}");
        }
    }

    #[test]
    fn pretty_prints_json_verbatim() {
        let text = br#"{"id":"7","queue":"q","payload":{"n":12345678901234567890123,"s":"a,b:{[\"x\\","t":"]} "},"depends_on":[],"o":{ },"x":[1, 2.50e3]}"#;
        let expected = r#"{
  "id": "7",
  "queue": "q",
  "payload": {
    "n": 12345678901234567890123,
    "s": "a,b:{[\"x\\",
    "t": "]} "
  },
  "depends_on": [],
  "o": {},
  "x": [
    1,
    2.50e3
  ]
}"#;
        assert_eq!(pretty_json(text).unwrap(), expected);
        assert_eq!(pretty_json(b" 42 ").unwrap(), "42");
        assert_eq!(pretty_json(br#""a b""#).unwrap(), r#""a b""#);
        assert_eq!(pretty_json(b"{\"a\": "), None);
        assert_eq!(pretty_json(b"not json"), None);
    }

    #[test]
    fn encodes_path_segments() {
        assert_eq!(encode_path_segment("emails-1.x_y:z~"), "emails-1.x_y:z~");
        assert_eq!(encode_path_segment("a/b c?"), "a%2Fb%20c%3F");
        assert_eq!(encode_path_segment("é"), "%C3%A9");
    }

    #[test]
    fn renders_requests() {
        let target = url("127.0.0.1", 7700, "/base");
        let bytes = render_request(&target, "POST", "/v1/dequeue", Some(br#"{"queues":["a"]}"#), None);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("POST /base/v1/dequeue HTTP/1.1\r\nHost: 127.0.0.1:7700\r\n"), "{text}");
        assert!(text.contains("\r\nContent-Length: 16\r\n"), "{text}");
        assert!(text.ends_with("Connection: close\r\n\r\n{\"queues\":[\"a\"]}"), "{text}");

        let text = String::from_utf8(render_request(&target, "GET", "v1/queues", None, Some("tqx_1"))).unwrap();
        assert!(text.contains("\r\nAuthorization: Bearer tqx_1\r\n"), "{text}");
        assert!(text.starts_with("GET /base/v1/queues HTTP/1.1\r\n"), "{text}");
        assert!(!text.contains("Content-Length"), "{text}");
        let text = String::from_utf8(render_request(&target, "POST", "/x", None, None)).unwrap();
        assert!(!text.contains("Authorization"), "{text}");
        assert!(text.contains("\r\nContent-Length: 0\r\n"), "{text}");
    }

    #[test]
    fn parses_a_response_with_content_length() {
        let bytes =
            b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"id\": \"7\"}\r\n";
        let response = parse_response(bytes, false, false).unwrap().unwrap();
        assert_eq!(response.status, 201);
        assert_eq!(response.header("CONTENT-TYPE"), Some("application/json"));
        assert_eq!(response.body, b"{\"id\": \"7\"}\r\n");
        assert!(response.is_success());

        // Every proper prefix is incomplete, not an error.
        for end in 0..bytes.len() {
            assert_eq!(parse_response(&bytes[..end], false, false), Ok(None), "prefix of {end} bytes");
        }
        // Bytes after the body (never sent with `Connection: close`) are ignored.
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(parse_response(&longer, false, false).unwrap().unwrap(), response);
    }

    #[test]
    fn parses_other_response_shapes() {
        // No Content-Length: the body runs to the end of the connection.
        let bytes = b"HTTP/1.0 404 Not Found\r\n\r\nnope";
        assert_eq!(parse_response(bytes, false, false), Ok(None));
        let response = parse_response(bytes, false, true).unwrap().unwrap();
        assert_eq!((response.status, response.body.as_slice()), (404, &b"nope"[..]));
        assert!(!response.is_success());

        // A HEAD reply and a 204 have no body whatever the headers say.
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
        assert_eq!(parse_response(bytes, true, false).unwrap().unwrap().body, b"");
        let bytes = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_response(bytes, false, false).unwrap().unwrap().status, 204);

        // An interim 100 Continue is skipped.
        let bytes = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        let response = parse_response(bytes, false, false).unwrap().unwrap();
        assert_eq!((response.status, response.body.as_slice()), (200, &b"{}"[..]));

        // Header values are trimmed; the 503's Retry-After is readable.
        let bytes = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After:  1 \r\ncontent-length: 0\r\n\r\n";
        assert_eq!(parse_response(bytes, false, false).unwrap().unwrap().header("retry-after"), Some("1"));
    }

    #[test]
    fn refuses_malformed_responses() {
        for bad in [
            &b"HTTP/1.1 abc OK\r\n\r\n"[..],
            b"SMTP ready\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999\r\n\r\n",
        ] {
            assert!(parse_response(bad, false, true).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// One connection on a loopback listener: reads the request head and body,
    /// sends `reply`, closes. Returns the address and the request as received.
    fn canned_server(reply: &'static [u8]) -> (SocketAddr, thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut received = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = stream.read(&mut chunk).unwrap();
                received.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&received).to_string();
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let length = text[..head_end]
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .map_or(0, |v| v.parse::<usize>().unwrap());
                    if received.len() >= head_end + 4 + length {
                        break;
                    }
                }
                assert!(n > 0, "client closed early");
            }
            // Dribble the reply in two writes to exercise reassembly.
            let (first, second) = reply.split_at(reply.len() / 2);
            stream.write_all(first).unwrap();
            stream.flush().unwrap();
            thread::sleep(Duration::from_millis(20));
            stream.write_all(second).unwrap();
            received
        });
        (addr, handle)
    }

    #[test]
    fn round_trip_over_loopback() {
        let reply = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 29\r\n\r\n{\"id\": \"7\", \"state\": \"ready\"}";
        let (addr, server) = canned_server(reply);
        let body = br#"{"payload":{"to":"a@b.c"}}"#;
        let response =
            request(&format!("http://{addr}"), "POST", "/v1/queues/emails/tasks", Some(body), REQUEST_TIMEOUT).unwrap();
        assert_eq!(response.status, 201);
        assert_eq!(response.body, br#"{"id": "7", "state": "ready"}"#);

        let received = String::from_utf8(server.join().unwrap()).unwrap();
        assert!(received.starts_with("POST /v1/queues/emails/tasks HTTP/1.1\r\n"), "{received}");
        assert!(received.contains(&format!("\r\nHost: {addr}\r\n")), "{received}");
        assert!(received.contains("\r\nContent-Length: 26\r\n"), "{received}");
        assert!(received.contains("\r\nConnection: close\r\n"), "{received}");
        assert!(received.ends_with(r#"{"payload":{"to":"a@b.c"}}"#), "{received}");
    }

    #[test]
    fn reports_connection_failures_and_truncation() {
        // A port nobody listens on: bind, note the port, close.
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let error = request(&format!("http://{addr}"), "GET", "/healthz", None, REQUEST_TIMEOUT).unwrap_err();
        assert!(matches!(error, ClientError::Connect { .. }), "{error:?}");
        assert!(error.to_string().contains("cannot connect to"), "{error}");

        // A reply cut short before its Content-Length is a bad response.
        let (addr, server) = canned_server(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"short\"");
        let error = request(&format!("http://{addr}"), "GET", "/healthz", None, REQUEST_TIMEOUT).unwrap_err();
        assert!(matches!(error, ClientError::BadResponse { .. }), "{error:?}");
        server.join().unwrap();
    }
}
