//! Token authentication and scopes ([security.md](../docs/security.md)): the
//! token file's format, token hashing and generation, and the authorization
//! decision for every command. Pure: no I/O (the server reads the file and
//! hands its text to [`Tokens::parse`]; `tqx token create` brings the random
//! bytes), no clock, no threads. Both protocols' connection steps (`http/`,
//! `binary/`), which the fuzz targets drive too, call it.
//!
//! **Model.** A token is a secret string (`tqx_` and 64 hex digits: 32 random
//! bytes). The server knows only its SHA-256, from a line of the token file,
//! with the scopes it grants and, optionally, the queue-name patterns it is
//! limited to. A request is *authenticated* when its token's hash is in the
//! table (compared in constant time, [`hashes_equal`]) and *authorized* when
//! the token's grant covers the operation ([`authorize`]):
//!
//! | operation | scope | on |
//! |---|---|---|
//! | enqueue, enqueue_batch | `produce` | the queue |
//! | dequeue | `consume` | every queue named |
//! | complete, fail, extend, complete_batch | `consume` | the task's queue |
//! | cancel | `produce` | the task's queue |
//! | get_task | `produce` or `consume` | the task's queue |
//! | configure_queue, get_queue, delete_queue | `admin` | the queue |
//! | list_queues | `admin` | all queues (a token limited to some queues may not) |
//!
//! `admin` implies `produce` and `consume`. A token without `queues=` covers
//! every queue. Operations that name a task by id are checked against the
//! task's queue where the task's queue is known: under the engine lock, just
//! before execution ([`check_task_queues`], called by `server/worker.rs` when
//! [`authorize`] answers [`Decision::CheckTaskQueues`]); nothing is executed
//! or logged for a refused one.
//!
//! **Client certificates.** A line of the token file may name a mutual-TLS
//! client certificate instead of a token: `cert-sha256=` and the SHA-256 of
//! the certificate's DER ([`CertificateFingerprint`], what `openssl x509
//! -noout -fingerprint -sha256` prints), with the same scopes, queues and
//! name. A connection whose TLS handshake verified such a certificate
//! ([`Session::with_certificate`]) is authenticated by it without a token;
//! a token it presents takes the certificate's place (HTTP: for that request;
//! binary: from its `auth` on, for the rest of the connection).
//!
//! **Why it is cheap.** Authenticating hashes the token (about 0.2 µs) and
//! scans the table; a connection does that once per token and table
//! generation ([`Session`]) and then only compares (HTTP: the presented bytes
//! with the ones it accepted, in constant time; binary: nothing, the
//! connection authenticated once). Authorizing is a bit test and, for a token
//! limited to queues, a prefix comparison per pattern; nothing allocates
//! unless the request is refused.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::command::{Command, CompleteItem};
use crate::engine::{validate_queue_name, EngineError, TaskId};
use crate::limits::{
    AUTH_FAILURES_PER_CONNECTION_MAX, TOKENS_COUNT_MAX, TOKEN_BYTES_MAX, TOKEN_QUEUE_PATTERNS_COUNT_MAX,
};

/// The start of every token `tqx token create` makes, so a leaked one is
/// recognizable (by secret scanners, and by people).
pub const TOKEN_PREFIX: &str = "tqx_";
/// Random bytes in a token: 256 bits, beyond guessing.
pub const TOKEN_RANDOM_BYTES: usize = 32;

/// SHA-256 of a token: what the token file holds.
pub type TokenHash = [u8; 32];

/// SHA-256 of a client certificate's DER encoding: how a line of the token
/// file names a mutual-TLS client certificate (`cert-sha256=`). It is what
/// `openssl x509 -noout -fingerprint -sha256` prints, and it is shown that
/// way (`AB:CD:...`) so the two can be compared by eye. It is not a secret (a
/// certificate is public): what proves a client holds the certificate is the
/// TLS handshake, which verified the chain against `--tls-client-ca` and the
/// client's signature with its key before any request is read.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertificateFingerprint([u8; 32]);

impl CertificateFingerprint {
    /// The fingerprint of a certificate, DER-encoded (the leaf of the chain
    /// the client presented).
    pub fn of(der: &[u8]) -> CertificateFingerprint {
        CertificateFingerprint(Sha256::digest(der).into())
    }

    /// 64 hex digits, or 32 pairs of them separated by colons (openssl's
    /// form), in either case.
    pub fn parse(text: &str) -> Option<CertificateFingerprint> {
        let bytes = text.as_bytes();
        let pairs: Vec<&[u8]> = match bytes.len() {
            64 => bytes.chunks(2).collect(),
            95 if bytes.iter().skip(2).step_by(3).all(|&b| b == b':') => {
                bytes.chunks(3).map(|group| &group[..2]).collect()
            }
            _ => return None,
        };
        hex_32(&pairs, true).map(CertificateFingerprint)
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for CertificateFingerprint {
    /// Uppercase hex pairs separated by colons, as openssl prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CertificateFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertificateFingerprint({self})")
    }
}

// ---- scopes and grants -------------------------------------------------------

/// What a token may do; see the module's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Produce,
    Consume,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Produce, Scope::Consume, Scope::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Produce => "produce",
            Scope::Consume => "consume",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.name() == name)
    }

    /// Its bit in [`Scopes`], the same as the wire's `auth` reply.
    fn bit(self) -> u8 {
        match self {
            Scope::Produce => tqx_wire::SCOPE_PRODUCE,
            Scope::Consume => tqx_wire::SCOPE_CONSUME,
            Scope::Admin => tqx_wire::SCOPE_ADMIN,
        }
    }
}

/// A set of scopes, as the bits of the binary protocol's `auth` reply.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub fn of(scopes: &[Scope]) -> Scopes {
        Scopes(scopes.iter().fold(0, |bits, scope| bits | scope.bit()))
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Whether these scopes allow what `scope` allows (`admin` implies the others).
    pub fn grants(self, scope: Scope) -> bool {
        self.contains(scope) || self.contains(Scope::Admin)
    }

    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Scopes {
    /// `produce,consume`, in the order of [`Scope::ALL`] (the token file's form).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for scope in Scope::ALL.into_iter().filter(|scope| self.contains(*scope)) {
            if !first {
                f.write_str(",")?;
            }
            f.write_str(scope.name())?;
            first = false;
        }
        Ok(())
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scopes({self})")
    }
}

/// A queue-name pattern of a token: a name, or a prefix followed by `*`
/// (`orders.*` covers `orders.eu` and `orders.`; `*` alone covers every queue).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuePattern {
    text: String,
    prefix: bool,
}

impl QueuePattern {
    /// `orders.*` or `billing`: the characters of queue names, and `*` only at the end.
    pub fn parse(pattern: &str) -> Result<QueuePattern, String> {
        let (text, prefix) = match pattern.strip_suffix('*') {
            Some(text) => (text, true),
            None => (pattern, false),
        };
        if text.contains('*') {
            return Err(format!("queue pattern {pattern:?}: `*` may only end a pattern"));
        }
        if !(prefix && text.is_empty()) {
            validate_queue_name(text, "queues").map_err(|error| format!("queue pattern {pattern:?}: {error}"))?;
        }
        Ok(QueuePattern { text: text.to_owned(), prefix })
    }

    pub fn matches(&self, queue: &str) -> bool {
        if self.prefix {
            queue.starts_with(&self.text)
        } else {
            queue == self.text
        }
    }

    fn is_everything(&self) -> bool {
        self.prefix && self.text.is_empty()
    }
}

impl fmt::Display for QueuePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        if self.prefix {
            f.write_str("*")?;
        }
        Ok(())
    }
}

/// What one token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    scopes: Scopes,
    /// `None`: every queue.
    queues: Option<Vec<QueuePattern>>,
    /// The token file's `name=`, for people (which line to delete to revoke).
    name: Option<String>,
}

impl Grant {
    /// `queues` empty, or holding `*`: every queue.
    pub fn new(scopes: Scopes, queues: Vec<QueuePattern>, name: Option<String>) -> Grant {
        let queues = (!queues.is_empty() && !queues.iter().any(QueuePattern::is_everything)).then_some(queues);
        Grant { scopes, queues, name }
    }

    pub fn scopes(&self) -> Scopes {
        self.scopes
    }

    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Whether the grant is limited to some queues.
    pub fn is_limited(&self) -> bool {
        self.queues.is_some()
    }

    pub fn covers(&self, queue: &str) -> bool {
        match &self.queues {
            None => true,
            Some(patterns) => patterns.iter().any(|pattern| pattern.matches(queue)),
        }
    }

    fn has(&self, need: Need) -> bool {
        match need {
            Need::Scope(scope) => self.scopes.grants(scope),
            Need::ProduceOrConsume => self.scopes.grants(Scope::Produce) || self.scopes.grants(Scope::Consume),
        }
    }

    fn check(&self, need: Need, queue: &str) -> Result<(), EngineError> {
        if self.has(need) && self.covers(queue) {
            Ok(())
        } else {
            Err(forbidden(need, format!(" on queue {queue:?}").into()))
        }
    }
}

// ---- authorization -----------------------------------------------------------

/// The scope a command needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    Scope(Scope),
    /// A task-status read: whoever put tasks in or takes them out.
    ProduceOrConsume,
}

impl Need {
    fn name(self) -> &'static str {
        match self {
            Need::Scope(scope) => scope.name(),
            Need::ProduceOrConsume => "produce or consume",
        }
    }
}

/// Where a command acts.
enum Target<'a> {
    Queue(&'a str),
    Queues(&'a [String]),
    /// Every queue (list_queues): a grant limited to some may not.
    AllQueues,
    /// Tasks named by id, whose queues only the engine knows.
    Tasks,
}

fn requirement(command: &Command) -> (Need, Target<'_>) {
    use Scope::{Admin, Consume, Produce};
    match command {
        Command::ConfigureQueue { queue, .. } | Command::GetQueue { queue } | Command::DeleteQueue { queue, .. } => {
            (Need::Scope(Admin), Target::Queue(queue))
        }
        Command::ListQueues => (Need::Scope(Admin), Target::AllQueues),
        Command::Enqueue { queue, .. } | Command::EnqueueBatch { queue, .. } => {
            (Need::Scope(Produce), Target::Queue(queue))
        }
        Command::Dequeue { queues, .. } => (Need::Scope(Consume), Target::Queues(queues)),
        Command::GetTask { .. } => (Need::ProduceOrConsume, Target::Tasks),
        Command::Complete { .. } | Command::Fail { .. } | Command::Extend { .. } | Command::CompleteBatch { .. } => {
            (Need::Scope(Consume), Target::Tasks)
        }
        // Reading a queue's tasks is reading each of them: what get_task needs.
        Command::ListTasks { queue, .. } => (Need::ProduceOrConsume, Target::Queue(queue)),
        // Resubmitting a dead task, or withdrawing a finished one, is what
        // enqueue and cancel are to a producer.
        Command::Cancel { .. } | Command::RetryTask { .. } | Command::DeleteTask { .. } => {
            (Need::Scope(Produce), Target::Tasks)
        }
    }
}

fn forbidden(need: Need, on: Cow<'static, str>) -> EngineError {
    EngineError::Forbidden { scope: need.name(), on }
}

/// What [`authorize`] decided for a command it does not refuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; nothing more to check.
    Allowed,
    /// The grant has the scope but is limited to some queues, and the command
    /// names tasks by id: allowed only if each task's queue is covered, which
    /// [`check_task_queues`] decides where the engine is at hand.
    CheckTaskQueues,
}

/// Whether `grant` allows `command`: `forbidden` naming the scope it lacks
/// (and the queue) if not. Allocates only to refuse.
pub fn authorize(grant: &Grant, command: &Command) -> Result<Decision, EngineError> {
    let (need, target) = requirement(command);
    match target {
        Target::Queue(queue) => grant.check(need, queue).map(|()| Decision::Allowed),
        Target::Queues(queues) => {
            for queue in queues {
                grant.check(need, queue)?;
            }
            Ok(Decision::Allowed)
        }
        Target::AllQueues | Target::Tasks if !grant.has(need) => Err(forbidden(need, "".into())),
        Target::AllQueues if grant.is_limited() => {
            Err(forbidden(need, " on all queues (this token is limited to some)".into()))
        }
        Target::AllQueues => Ok(Decision::Allowed),
        Target::Tasks if grant.is_limited() => Ok(Decision::CheckTaskQueues),
        Target::Tasks => Ok(Decision::Allowed),
    }
}

/// For a command that names tasks by id, under a grant limited to some
/// queues ([`Decision::CheckTaskQueues`]): refuses it if a task it names is in
/// a queue the grant does not cover. `queue_of` is the engine's
/// `Engine::task_queue`; a task that does not exist is left to the engine
/// (`task_not_found`). A batch complete is refused whole, naming the first
/// task outside.
pub fn check_task_queues<'a>(
    grant: &Grant,
    command: &Command,
    queue_of: impl Fn(TaskId) -> Option<&'a str>,
) -> Result<(), EngineError> {
    let (need, _) = requirement(command);
    let check = |id: TaskId| match queue_of(id) {
        Some(queue) if !grant.covers(queue) => Err(forbidden(need, format!(" on queue {queue:?} (task {id})").into())),
        _ => Ok(()),
    };
    match command {
        Command::GetTask { id }
        | Command::Cancel { id }
        | Command::Complete { id, .. }
        | Command::Fail { id, .. }
        | Command::Extend { id, .. }
        | Command::RetryTask { id }
        | Command::DeleteTask { id } => check(*id),
        Command::CompleteBatch { items } => items.iter().try_for_each(|CompleteItem { id, .. }| check(*id)),
        Command::ConfigureQueue { .. }
        | Command::ListQueues
        | Command::GetQueue { .. }
        | Command::DeleteQueue { .. }
        | Command::Enqueue { .. }
        | Command::EnqueueBatch { .. }
        | Command::Dequeue { .. }
        | Command::ListTasks { .. } => Ok(()),
    }
}

// ---- tokens ------------------------------------------------------------------

/// SHA-256 of `token`'s bytes.
pub fn hash_token(token: &[u8]) -> TokenHash {
    Sha256::digest(token).into()
}

/// Compares two hashes in time independent of where they differ, so that the
/// time an answer takes says nothing about how close a guess came. (Of a hash,
/// which already says nothing useful about the token; it costs nothing.)
pub fn hashes_equal(a: &TokenHash, b: &TokenHash) -> bool {
    let mut difference = 0u8;
    for (x, y) in a.iter().zip(b) {
        difference |= x ^ y;
    }
    std::hint::black_box(difference) == 0
}

/// A new token from 32 random bytes (the caller reads them from the OS):
/// `tqx_` and 64 lowercase hex digits.
pub fn format_token(random: &[u8; TOKEN_RANDOM_BYTES]) -> String {
    let mut token = String::with_capacity(TOKEN_PREFIX.len() + 2 * TOKEN_RANDOM_BYTES);
    token.push_str(TOKEN_PREFIX);
    token.push_str(&hex(random));
    token
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes.iter().flat_map(|b| [DIGITS[usize::from(b >> 4)] as char, DIGITS[usize::from(b & 15)] as char]).collect()
}

/// A token's hash: 64 lowercase hex digits.
fn parse_hash(text: &str) -> Option<TokenHash> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    hex_32(&bytes.chunks(2).collect::<Vec<_>>(), false)
}

/// 32 bytes from 32 pairs of hex digits (uppercase ones too if `any_case`).
fn hex_32(pairs: &[&[u8]], any_case: bool) -> Option<[u8; 32]> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' if any_case => Some(b - b'A' + 10),
        _ => None,
    };
    if pairs.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (byte, pair) in bytes.iter_mut().zip(pairs) {
        let [high, low] = **pair else { return None };
        *byte = (digit(high)? << 4) | digit(low)?;
    }
    Some(bytes)
}

/// Whom a line of the token file grants its scopes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// Whoever presents the token with this hash (`sha256=`).
    Token(TokenHash),
    /// A connection whose mutual-TLS handshake verified the client
    /// certificate with this fingerprint (`cert-sha256=`).
    Certificate(CertificateFingerprint),
}

/// One line of the token file, as `tqx token create` writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenLine {
    pub holder: Holder,
    pub grant: Grant,
}

impl fmt::Display for TokenLine {
    /// `sha256=<hex>` or `cert-sha256=<AB:CD:...>`, then
    /// ` scopes=<list>[ queues=<list>][ name=<name>]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.holder {
            Holder::Token(hash) => write!(f, "sha256={}", hex(hash))?,
            Holder::Certificate(fingerprint) => write!(f, "cert-sha256={fingerprint}")?,
        }
        write!(f, " scopes={}", self.grant.scopes)?;
        if let Some(queues) = &self.grant.queues {
            f.write_str(" queues=")?;
            for (i, pattern) in queues.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{pattern}")?;
            }
        }
        if let Some(name) = &self.grant.name {
            write!(f, " name={name}")?;
        }
        Ok(())
    }
}

impl TokenLine {
    /// Reads one line that is not blank or a comment: a token's (`sha256=`)
    /// or a client certificate's (`cert-sha256=`), the rest the same.
    pub fn parse(line: &str) -> Result<TokenLine, String> {
        const KEYS: &str = "keys: sha256 or cert-sha256, scopes, queues, name";
        let mut holder = None;
        let mut scopes = None;
        let mut queues = None;
        let mut name = None;
        let mut seen: Vec<&str> = Vec::with_capacity(4);
        for field in line.split_ascii_whitespace() {
            let Some((key, value)) = field.split_once('=') else {
                return Err(format!("{field:?} is not key=value ({KEYS})"));
            };
            if seen.contains(&key) {
                return Err(format!("{key}= is given twice"));
            }
            let this_holder = match key {
                "sha256" => Some(Holder::Token(parse_hash(value).ok_or_else(|| {
                    format!("sha256={value:?} is not 64 lowercase hex digits (the SHA-256 of the token)")
                })?)),
                "cert-sha256" => Some(Holder::Certificate(CertificateFingerprint::parse(value).ok_or_else(|| {
                    format!(
                        "cert-sha256={value:?} is not 64 hex digits, with or without colons (the SHA-256 \
                         fingerprint of the client certificate: openssl x509 -noout -fingerprint -sha256)"
                    )
                })?)),
                "scopes" => {
                    scopes = Some(parse_scopes(value)?);
                    None
                }
                "queues" => {
                    queues = Some(parse_patterns(value)?);
                    None
                }
                "name" => {
                    name = Some(parse_name(value)?);
                    None
                }
                _ => return Err(format!("unknown key {key:?} ({KEYS})")),
            };
            if this_holder.is_some() {
                if holder.is_some() {
                    return Err("a line has sha256= (a token) or cert-sha256= (a client certificate), not both".into());
                }
                holder = this_holder;
            }
            seen.push(key);
        }
        let holder = holder.ok_or(
            "no sha256= (the SHA-256 of the token) or cert-sha256= (the SHA-256 fingerprint of a client certificate)",
        )?;
        let scopes = scopes.ok_or("no scopes= (produce, consume, admin)")?;
        Ok(TokenLine { holder, grant: Grant::new(scopes, queues.unwrap_or_default(), name) })
    }
}

fn parse_scopes(list: &str) -> Result<Scopes, String> {
    let mut scopes = Vec::new();
    for name in list.split(',') {
        let scope = Scope::parse(name).ok_or_else(|| {
            format!("scope {name:?} is not one of produce, consume, admin (separate them with commas)")
        })?;
        scopes.push(scope);
    }
    Ok(Scopes::of(&scopes))
}

fn parse_patterns(list: &str) -> Result<Vec<QueuePattern>, String> {
    let patterns: Vec<QueuePattern> = list.split(',').map(QueuePattern::parse).collect::<Result<_, _>>()?;
    if patterns.len() > TOKEN_QUEUE_PATTERNS_COUNT_MAX {
        return Err(format!("{} queue patterns; the limit is {TOKEN_QUEUE_PATTERNS_COUNT_MAX}", patterns.len()));
    }
    Ok(patterns)
}

/// A token's name: 1 to 64 of `A-Z a-z 0-9 _ - . :` (no spaces, no `=`).
fn parse_name(name: &str) -> Result<String, String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if valid {
        Ok(name.to_owned())
    } else {
        Err(format!("name {name:?} must be 1 to 64 of A-Z a-z 0-9 _ - . :"))
    }
}

/// Why a token file was refused: the line (from 1) and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFileError {
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for TokenFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for TokenFileError {}

/// The token table: every token's hash and grant, and every client
/// certificate's fingerprint and grant, as read from the token file.
/// `generation` tells the tables of successive reloads apart, so a
/// connection knows when to look its token or certificate up again ([`Session`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    entries: Vec<(TokenHash, Arc<Grant>)>,
    certificates: Vec<(CertificateFingerprint, Arc<Grant>)>,
    generation: u64,
}

impl Tokens {
    /// Reads a token file: one token or client certificate per line
    /// (`TokenLine`), blank lines and lines starting with `#` ignored. Any
    /// malformed line, a hash or fingerprint given twice or more than
    /// [`TOKENS_COUNT_MAX`] lines of both kinds refuses the whole file,
    /// naming the line.
    pub fn parse(text: &str) -> Result<Tokens, TokenFileError> {
        let mut entries: Vec<(TokenHash, Arc<Grant>)> = Vec::new();
        let mut certificates: Vec<(CertificateFingerprint, Arc<Grant>)> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_number = index + 1;
            let error = |reason: String| TokenFileError { line: line_number, reason };
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let TokenLine { holder, grant } = TokenLine::parse(trimmed).map_err(error)?;
            if entries.len() + certificates.len() == TOKENS_COUNT_MAX {
                return Err(error(format!("more than {TOKENS_COUNT_MAX} tokens and certificates")));
            }
            match holder {
                Holder::Token(hash) => {
                    if entries.iter().any(|(known, _)| *known == hash) {
                        return Err(error("this sha256 is already on an earlier line".into()));
                    }
                    entries.push((hash, Arc::new(grant)));
                }
                Holder::Certificate(fingerprint) => {
                    if certificates.iter().any(|(known, _)| *known == fingerprint) {
                        return Err(error("this cert-sha256 is already on an earlier line".into()));
                    }
                    certificates.push((fingerprint, Arc::new(grant)));
                }
            }
        }
        Ok(Tokens { entries, certificates, generation: 0 })
    }

    pub fn with_generation(self, generation: u64) -> Tokens {
        Tokens { generation, ..self }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Tokens in the table.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Client certificates in the table.
    pub fn certificates_len(&self) -> usize {
        self.certificates.len()
    }

    /// No token and no certificate: every request is refused.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.certificates.is_empty()
    }

    /// The grant of a client certificate. A plain search: a fingerprint is
    /// not a secret, and the handshake already proved the certificate's holder.
    pub fn find_certificate(&self, fingerprint: &CertificateFingerprint) -> Option<&Arc<Grant>> {
        self.certificates.iter().find(|(known, _)| known == fingerprint).map(|(_, grant)| grant)
    }

    /// The grant of the token whose hash is `hash`. Compares with every entry,
    /// in constant time each and without stopping at a match.
    pub fn find(&self, hash: &TokenHash) -> Option<&Arc<Grant>> {
        let mut found = None;
        for (known, grant) in &self.entries {
            if hashes_equal(known, hash) {
                found = Some(grant);
            }
        }
        found
    }

    /// The grant of `token`, and its hash; `None` if the table does not hold
    /// it (or it is longer than [`TOKEN_BYTES_MAX`], which no token is).
    pub fn authenticate(&self, token: &[u8]) -> Option<(TokenHash, &Arc<Grant>)> {
        if token.is_empty() || token.len() > TOKEN_BYTES_MAX {
            return None;
        }
        let hash = hash_token(token);
        self.find(&hash).map(|grant| (hash, grant))
    }
}

// ---- a connection's authentication -------------------------------------------

/// A token as an HTTP request presented it, kept inline (no allocation per
/// request) so a connection can tell the next request's token is the same.
/// `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct PresentedToken {
    bytes: [u8; TOKEN_BYTES_MAX],
    len: u8,
}

impl PresentedToken {
    /// `None` if `token` is empty or longer than [`TOKEN_BYTES_MAX`].
    pub fn new(token: &[u8]) -> Option<PresentedToken> {
        if token.is_empty() || token.len() > TOKEN_BYTES_MAX {
            return None;
        }
        let mut bytes = [0u8; TOKEN_BYTES_MAX];
        bytes[..token.len()].copy_from_slice(token);
        Some(PresentedToken { bytes, len: token.len() as u8 })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Equality in constant time (over the whole buffer): one connection may
    /// carry the requests of several clients (a proxy's), and the time this
    /// takes must not tell one how much of another's token it guessed.
    fn same_as(&self, other: &PresentedToken) -> bool {
        let mut difference = self.len ^ other.len;
        for (x, y) in self.bytes.iter().zip(&other.bytes) {
            difference |= x ^ y;
        }
        std::hint::black_box(difference) == 0
    }
}

impl fmt::Debug for PresentedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PresentedToken({} bytes)", self.len)
    }
}

/// The unauthenticated error with a fixed reason.
pub fn unauthenticated(reason: &'static str) -> EngineError {
    EngineError::Unauthenticated { reason: reason.into() }
}

/// An HTTP request without `Authorization`.
pub const NO_TOKEN_HTTP: &str = "this server requires a token: send the header `Authorization: Bearer <token>`";
/// An `Authorization` header that is not `Bearer <token>`.
pub const MALFORMED_HTTP: &str =
    "the Authorization header is not `Bearer <token>` (one token of 1 to 128 bytes, no spaces)";
/// A binary request before a successful `auth`.
pub const NO_TOKEN_BINARY: &str =
    "this server requires a token: send auth with a token after hello, before any other request";
/// A token the table does not hold.
pub const REFUSED: &str = "the token was refused: this server does not know it (mistyped, or revoked)";

/// What one connection knows of its client's authentication: the grant in
/// force, its client certificate's (mutual TLS) and how many authentications
/// failed.
///
/// The grant is re-checked against the table whenever the table changed
/// since it was found (its generation moved, after a SIGHUP reload): a token
/// revoked from the file stops working on open connections at their next
/// request, and a token whose scopes changed has the new ones from then on.
/// The same holds for the certificate's line: removed, the connection's
/// requests without a token are refused from the next on; added or changed,
/// they have its scopes from the next on (the certificate is presented, as it
/// were, with every request).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Session {
    current: Option<Current>,
    /// The client certificate the handshake verified, while no binary `auth`
    /// replaced it.
    certificate: Option<CertificateGrant>,
    failures: u32,
}

/// A client certificate's fingerprint and its grant in the table of `generation`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CertificateGrant {
    fingerprint: CertificateFingerprint,
    grant: Option<Arc<Grant>>,
    generation: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Current {
    hash: TokenHash,
    grant: Arc<Grant>,
    generation: u64,
    /// The bytes an HTTP request presented, to recognize the next (binary: none).
    presented: Option<PresentedToken>,
}

impl Session {
    pub fn new() -> Session {
        Session::default()
    }

    /// The session of a connection whose TLS handshake verified the client
    /// certificate with this fingerprint (mutual TLS): looked up once now,
    /// and again only after a reload. Until a token replaces it, requests
    /// without a token have the certificate's grant, if the table has a
    /// line for it; else they need a token, as on any connection.
    pub fn with_certificate(tokens: &Tokens, fingerprint: CertificateFingerprint) -> Session {
        let grant = tokens.find_certificate(&fingerprint).cloned();
        let certificate = CertificateGrant { fingerprint, grant, generation: tokens.generation() };
        Session { certificate: Some(certificate), ..Session::default() }
    }

    /// Authenticates with a token (the binary `auth` request): the grant, or
    /// `None`, after which the connection is unauthenticated (a failed `auth`
    /// also drops an earlier success). Either way the token replaces the
    /// client certificate's grant for the rest of the connection: a client
    /// that sends `auth` is authenticated by its tokens only. Does not count
    /// the failure: [`Session::fail`].
    pub fn authenticate(&mut self, tokens: &Tokens, token: &[u8]) -> Option<&Arc<Grant>> {
        self.certificate = None;
        self.authenticate_token(tokens, token)
    }

    fn authenticate_token(&mut self, tokens: &Tokens, token: &[u8]) -> Option<&Arc<Grant>> {
        self.current = tokens.authenticate(token).map(|(hash, grant)| Current {
            hash,
            grant: grant.clone(),
            generation: tokens.generation(),
            presented: None,
        });
        self.current.as_ref().map(|current| &current.grant)
    }

    /// The client certificate's grant in `tokens` (an HTTP request without
    /// `Authorization`; a binary request before any `auth`): `None` without
    /// a certificate, or if the table has no line for it. Looked up again
    /// only when the table changed.
    pub fn certificate_grant(&mut self, tokens: &Tokens) -> Option<&Arc<Grant>> {
        let certificate = self.certificate.as_mut()?;
        if certificate.generation != tokens.generation() {
            certificate.grant = tokens.find_certificate(&certificate.fingerprint).cloned();
            certificate.generation = tokens.generation();
        }
        certificate.grant.as_ref()
    }

    /// Authenticates an HTTP request's token: the same token as the previous
    /// request's, against the same table, costs one constant-time comparison;
    /// another is looked up. The token stands for this request only: the
    /// next without one has the client certificate's grant again.
    pub fn authenticate_presented(&mut self, tokens: &Tokens, presented: &PresentedToken) -> Option<&Arc<Grant>> {
        let cached = self.current.as_ref().is_some_and(|current| {
            current.generation == tokens.generation()
                && current.presented.as_ref().is_some_and(|known| known.same_as(presented))
        });
        if !cached {
            self.authenticate_token(tokens, presented.as_bytes());
            if let Some(current) = &mut self.current {
                current.presented = Some(presented.clone());
            }
        }
        self.current.as_ref().map(|current| &current.grant)
    }

    /// The grant in force for a binary request: its `auth`'s token's, looked
    /// up again by hash if the table changed since, or before any `auth` the
    /// client certificate's ([`Session::certificate_grant`]). `None` if there
    /// is none, or the token or certificate was revoked.
    pub fn grant(&mut self, tokens: &Tokens) -> Option<&Arc<Grant>> {
        let stale = self.current.as_ref().is_some_and(|current| current.generation != tokens.generation());
        if stale {
            self.current = self.current.take().and_then(|current| {
                let grant = tokens.find(&current.hash)?.clone();
                Some(Current { grant, generation: tokens.generation(), ..current })
            });
        }
        if self.current.is_none() {
            return self.certificate_grant(tokens);
        }
        self.current.as_ref().map(|current| &current.grant)
    }

    /// Counts a failed authentication (a refused token, or a request without
    /// one). Returns whether the connection is to be closed: it reached
    /// [`AUTH_FAILURES_PER_CONNECTION_MAX`].
    pub fn fail(&mut self) -> bool {
        self.failures = self.failures.saturating_add(1);
        self.failures >= AUTH_FAILURES_PER_CONNECTION_MAX
    }

    /// The unauthenticated error for a failure [`Session::fail`] just counted:
    /// `reason`, and when `closing`, that the connection closes now.
    pub fn failure_error(reason: &'static str, closing: bool) -> EngineError {
        if closing {
            EngineError::Unauthenticated {
                reason: format!(
                    "{reason}; the connection is closed after {AUTH_FAILURES_PER_CONNECTION_MAX} failed \
                     authentications"
                )
                .into(),
            }
        } else {
            unauthenticated(reason)
        }
    }
}

#[cfg(test)]
mod tests;
