//! What a [`crate::Client`] may wait for and how hard it tries, with defaults.

/// Settings of a client. `ClientOptions::default()` gives the values documented
/// on each field; change what you need with struct update syntax:
///
/// ```
/// let options = tqx_client::ClientOptions { request_timeout_ms: 5_000, ..Default::default() };
/// assert_eq!(options.reconnect_attempts_max, 10);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// One connection attempt: TCP connect, the hello and the readiness ping,
    /// together. Default 5,000 (as the HTTP CLI's connect timeout).
    pub connect_timeout_ms: u64,
    /// How long a call waits for its reply once sent; a dequeue waits its
    /// `wait_ms` on top. Default 30,000 (as the HTTP CLI).
    pub request_timeout_ms: u64,
    /// Backoff between connection attempts: attempt `n` (from 1) after the
    /// first waits a uniformly random time in `[0, min(max, base * 2^(n-1))]`
    /// ("full jitter", so clients cut off together do not return together).
    /// Default 50.
    pub reconnect_backoff_base_ms: u64,
    /// The cap of that backoff. Default 5,000.
    pub reconnect_backoff_max_ms: u64,
    /// Connection attempts per (re)connect, at least 1 (0 counts as 1); after
    /// the last, the call fails with `ClientError::Connect`. Default 10: with
    /// the defaults above, about 8 s of trying on average (16 s at most).
    pub reconnect_attempts_max: u32,
    /// Largest reply body accepted, so a broken or hostile peer cannot make the
    /// client allocate without bound. Default 256 MiB (as the HTTP CLI): room
    /// for a 1,000-task dequeue of 256 KiB payloads.
    pub reply_body_bytes_max: usize,
    /// TLS to a server started with `--tls-cert` (`None`: plain TCP). Default
    /// `None`.
    pub tls: Option<crate::ClientTls>,
    /// The API token, for a server with `tqx serve --tokens`: sent in an
    /// `auth` request after the hello of every connection (and reconnection).
    /// A refused token fails the connect with `ClientError::Server` and code
    /// `unauthenticated`, which is not retried. Default `None`.
    pub token: Option<Token>,
}

/// An API token. Its `Debug` form hides it, so options can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(token: impl Into<String>) -> Token {
        Token(token.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({} bytes)", self.0.len())
    }
}

/// Default of [`ClientOptions::connect_timeout_ms`].
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Default of [`ClientOptions::request_timeout_ms`].
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default of [`ClientOptions::reconnect_backoff_base_ms`].
pub const RECONNECT_BACKOFF_BASE_MS_DEFAULT: u64 = 50;
/// Default of [`ClientOptions::reconnect_backoff_max_ms`].
pub const RECONNECT_BACKOFF_MAX_MS_DEFAULT: u64 = 5_000;
/// Default of [`ClientOptions::reconnect_attempts_max`].
pub const RECONNECT_ATTEMPTS_MAX_DEFAULT: u32 = 10;
/// Default of [`ClientOptions::reply_body_bytes_max`].
pub const REPLY_BODY_BYTES_MAX_DEFAULT: usize = 256 << 20;

const _: () = assert!(RECONNECT_BACKOFF_BASE_MS_DEFAULT <= RECONNECT_BACKOFF_MAX_MS_DEFAULT);
const _: () = assert!(RECONNECT_ATTEMPTS_MAX_DEFAULT >= 1);
// A reply must be able to carry at least one request-sized payload back.
const _: () = assert!(REPLY_BODY_BYTES_MAX_DEFAULT >= tqx_wire::FRAME_BODY_BYTES_MAX_DEFAULT);

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
            reconnect_backoff_base_ms: RECONNECT_BACKOFF_BASE_MS_DEFAULT,
            reconnect_backoff_max_ms: RECONNECT_BACKOFF_MAX_MS_DEFAULT,
            reconnect_attempts_max: RECONNECT_ATTEMPTS_MAX_DEFAULT,
            reply_body_bytes_max: REPLY_BODY_BYTES_MAX_DEFAULT,
            tls: None,
            token: None,
        }
    }
}

impl ClientOptions {
    /// The ceiling of the wait before connection attempt `retry + 1` (`retry`
    /// from 0): `min(max, base * 2^retry)`.
    pub fn backoff_ceiling_ms(&self, retry: u32) -> u64 {
        let factor = 1u64.checked_shl(retry.min(63)).unwrap_or(u64::MAX);
        self.reconnect_backoff_base_ms.saturating_mul(factor).min(self.reconnect_backoff_max_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_ceiling_doubles_up_to_the_cap() {
        let options = ClientOptions::default();
        let ceilings: Vec<u64> = (0..9).map(|n| options.backoff_ceiling_ms(n)).collect();
        assert_eq!(ceilings, [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(options.backoff_ceiling_ms(200), 5000);
        let zero = ClientOptions { reconnect_backoff_base_ms: 0, ..ClientOptions::default() };
        assert_eq!(zero.backoff_ceiling_ms(5), 0);
    }
}
