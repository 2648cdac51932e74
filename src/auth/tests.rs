//! Unit tests of `auth.rs`: the token file, patterns, every scope boundary of
//! every command, and a connection's session across reloads.

use bytes::Bytes;

use super::*;
use crate::command::CompleteItem;
use crate::engine::{NewTask, QueueConfigPatch, TaskState};

fn hash_hex(token: &str) -> String {
    hex(&hash_token(token.as_bytes()))
}

fn grant(scopes: &[Scope], queues: &[&str]) -> Grant {
    let queues = queues.iter().map(|pattern| QueuePattern::parse(pattern).unwrap()).collect();
    Grant::new(Scopes::of(scopes), queues, None)
}

/// One command of each kind, all on queue `q` or task 1.
fn every_command() -> Vec<(&'static str, Command)> {
    let task = || NewTask { payload: Bytes::from_static(b"1"), ..NewTask::default() };
    vec![
        ("configure_queue", Command::ConfigureQueue { queue: "q".into(), patch: QueueConfigPatch::default() }),
        ("list_queues", Command::ListQueues),
        ("get_queue", Command::GetQueue { queue: "q".into() }),
        ("delete_queue", Command::DeleteQueue { queue: "q".into(), force: false }),
        ("enqueue", Command::Enqueue { queue: "q".into(), task: task() }),
        ("enqueue_batch", Command::EnqueueBatch { queue: "q".into(), tasks: vec![task()] }),
        ("dequeue", Command::Dequeue { queues: vec!["q".into()], max: 1, lease_ms: None, wait_ms: 0 }),
        ("get_task", Command::GetTask { id: 1 }),
        ("complete", Command::Complete { id: 1, lease: 1, result: None }),
        ("fail", Command::Fail { id: 1, lease: 1, error: String::new(), retry: true }),
        ("extend", Command::Extend { id: 1, lease: 1, lease_ms: 1 }),
        ("cancel", Command::Cancel { id: 1 }),
        ("complete_batch", Command::CompleteBatch { items: vec![CompleteItem { id: 1, lease: 1, result: None }] }),
        ("list_tasks", Command::ListTasks { queue: "q".into(), state: TaskState::Dead, after: 0, limit: 10 }),
        ("retry_task", Command::RetryTask { id: 1 }),
        ("delete_task", Command::DeleteTask { id: 1 }),
    ]
}

#[test]
fn sha256_and_constant_time_comparison() {
    // FIPS 180-2's example.
    assert_eq!(hash_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    let a = hash_token(b"a");
    let mut b = a;
    assert!(hashes_equal(&a, &b));
    b[31] ^= 1;
    assert!(!hashes_equal(&a, &b));
    b = a;
    b[0] ^= 0x80;
    assert!(!hashes_equal(&a, &b));
}

#[test]
fn a_new_token_is_the_prefix_and_64_hex_digits_and_its_line_authenticates_it() {
    let token = format_token(&[0xab; 32]);
    assert_eq!(token, format!("tqx_{}", "ab".repeat(32)));
    let hash = hash_token(token.as_bytes());
    let line = TokenLine { holder: Holder::Token(hash), grant: grant(&[Scope::Consume], &["orders.*"]) };
    let tokens = Tokens::parse(&line.to_string()).unwrap();
    let (found_hash, found) = tokens.authenticate(token.as_bytes()).expect("authenticates");
    assert_eq!((found_hash, &**found), (hash, &line.grant));
    assert!(tokens.authenticate(format_token(&[0xac; 32]).as_bytes()).is_none());
    assert!(tokens.authenticate(b"").is_none());
    assert!(tokens.authenticate(&[b'a'; TOKEN_BYTES_MAX + 1]).is_none());
}

#[test]
fn a_token_file_with_comments_blank_lines_and_every_key_parses_and_lines_round_trip() {
    let text = format!(
        "# the ingest service\n\
         \n\
         sha256={} scopes=produce queues=orders.*,billing name=ingest\n  \
         # workers\n\
         \tsha256={}   scopes=consume,produce\n\
         sha256={} scopes=admin queues=*\n",
        hash_hex("one"),
        hash_hex("two"),
        hash_hex("three")
    );
    let tokens = Tokens::parse(&text).unwrap();
    assert_eq!(tokens.len(), 3);
    let one = tokens.authenticate(b"one").unwrap().1;
    assert_eq!((one.scopes().to_string(), one.name(), one.is_limited()), ("produce".into(), Some("ingest"), true));
    let two = tokens.authenticate(b"two").unwrap().1;
    assert_eq!((two.scopes().to_string(), two.is_limited()), ("produce,consume".into(), false));
    let three = tokens.authenticate(b"three").unwrap().1;
    assert!(!three.is_limited(), "queues=* is every queue");
    for line in text.lines().filter(|line| line.trim().starts_with("sha256")) {
        let parsed = TokenLine::parse(line).unwrap();
        assert_eq!(TokenLine::parse(&parsed.to_string()).unwrap(), parsed, "{line}");
    }
    assert!(Tokens::parse("").unwrap().is_empty());
}

#[test]
fn a_malformed_line_refuses_the_file_naming_its_line_and_what_is_wrong() {
    let good = format!("sha256={} scopes=consume", hash_hex("good"));
    let hash = hash_hex("x");
    let cases: Vec<(String, &str)> = vec![
        ("scopes=consume".to_string(), "no sha256= (the SHA-256 of the token) or cert-sha256="),
        (format!("sha256={hash}"), "no scopes="),
        (format!("sha256={} scopes=consume", hash.to_uppercase()), "64 lowercase hex"),
        (format!("sha256={} scopes=consume", &hash[..62]), "64 lowercase hex"),
        (format!("sha256={hash} scopes=consume,prodcue"), "\"prodcue\" is not one of"),
        (format!("sha256={hash} scopes="), "is not one of"),
        (format!("sha256={hash} scopes=consume queues=or*ders"), "`*` may only end"),
        (format!("sha256={hash} scopes=consume queues=orders/eu"), "queue pattern \"orders/eu\""),
        (format!("sha256={hash} scopes=consume queues="), "queue pattern \"\""),
        (format!("sha256={hash} scopes=consume scopes=admin"), "scopes= is given twice"),
        (format!("sha256={hash} scopes=consume colour=blue"), "unknown key \"colour\""),
        (format!("sha256={hash} consume"), "\"consume\" is not key=value"),
        (format!("sha256={hash} scopes=consume name=a=b"), "name \"a=b\""),
        (format!("sha256={hash} scopes=consume # trailing"), "\"#\" is not key=value"),
        (good.clone(), "already on an earlier line"),
    ];
    for (bad, expected) in cases {
        let text = format!("# tokens\n{good}\n\n{bad}\n");
        let error = Tokens::parse(&text).expect_err(&bad);
        assert_eq!(error.line, 4, "{bad}: {error}");
        assert!(error.to_string().starts_with("line 4: ") && error.reason.contains(expected), "{bad}: {error}");
    }
}

#[test]
fn too_many_tokens_or_patterns_are_refused() {
    let mut text = String::new();
    for i in 0..=TOKENS_COUNT_MAX {
        text.push_str(&format!("sha256={} scopes=consume\n", hex(&hash_token(&i.to_le_bytes()))));
    }
    let error = Tokens::parse(&text).unwrap_err();
    assert_eq!(error.line, TOKENS_COUNT_MAX + 1, "{error}");
    let patterns = vec!["q"; TOKEN_QUEUE_PATTERNS_COUNT_MAX + 1].join(",");
    let error = TokenLine::parse(&format!("sha256={} scopes=consume queues={patterns}", hash_hex("x"))).unwrap_err();
    assert!(error.contains("the limit is 64"), "{error}");
}

#[test]
fn queue_patterns_match_a_prefix_or_exactly_one_name() {
    let limited = grant(&[Scope::Consume], &["orders.*", "billing"]);
    for queue in ["orders.eu", "orders.", "orders.eu.retry", "billing"] {
        assert!(limited.covers(queue), "{queue}");
    }
    for queue in ["orders", "ordersx", "billing.eu", "billin", "x"] {
        assert!(!limited.covers(queue), "{queue}");
    }
    assert!(grant(&[Scope::Consume], &["*"]).covers("anything") && !grant(&[Scope::Consume], &["*"]).is_limited());
    assert!(grant(&[Scope::Consume], &[]).covers("anything"));
    assert!(QueuePattern::parse("*x").is_err() && QueuePattern::parse("a**").is_err());
}

/// Every command under every single scope: exactly the module table's
/// boundaries, on a queue the grant covers.
#[test]
fn every_command_needs_exactly_its_scope() {
    let allowed_by = |scope: Scope| -> Vec<&'static str> {
        match scope {
            Scope::Produce => {
                vec!["enqueue", "enqueue_batch", "get_task", "cancel", "list_tasks", "retry_task", "delete_task"]
            }
            Scope::Consume => vec!["dequeue", "get_task", "complete", "fail", "extend", "complete_batch", "list_tasks"],
            Scope::Admin => every_command().iter().map(|(name, _)| *name).collect(),
        }
    };
    for scope in Scope::ALL {
        let grant = grant(&[scope], &[]);
        for (name, command) in every_command() {
            let decision = authorize(&grant, &command);
            if allowed_by(scope).contains(&name) {
                assert_eq!(decision, Ok(Decision::Allowed), "{name} with {scope:?}");
            } else {
                let error = decision.expect_err(name);
                assert_eq!(error.code(), "forbidden", "{name} with {scope:?}");
                let needed = match name {
                    "get_task" | "list_tasks" => "produce or consume",
                    "enqueue" | "enqueue_batch" | "cancel" | "retry_task" | "delete_task" => "produce",
                    "dequeue" | "complete" | "fail" | "extend" | "complete_batch" => "consume",
                    _ => "admin",
                };
                assert!(error.to_string().starts_with(&format!("this credential lacks the {needed} scope")), "{error}");
            }
        }
    }
    // No scope at all: nothing.
    let none = Grant::new(Scopes::default(), Vec::new(), None);
    assert!(every_command().iter().all(|(_, command)| authorize(&none, command).is_err()));
}

#[test]
fn a_token_limited_to_queues_is_refused_outside_them_naming_the_queue() {
    let producer = grant(&[Scope::Produce], &["orders.*"]);
    let enqueue = |queue: &str| Command::Enqueue { queue: queue.into(), task: NewTask::default() };
    assert_eq!(authorize(&producer, &enqueue("orders.eu")), Ok(Decision::Allowed));
    let error = authorize(&producer, &enqueue("billing")).unwrap_err();
    assert_eq!(error.to_string(), "this credential lacks the produce scope on queue \"billing\"");

    let consumer = grant(&[Scope::Consume], &["orders.*"]);
    let dequeue =
        Command::Dequeue { queues: vec!["orders.eu".into(), "billing".into()], max: 1, lease_ms: None, wait_ms: 0 };
    assert!(authorize(&consumer, &dequeue).unwrap_err().to_string().contains("\"billing\""));

    let admin = grant(&[Scope::Admin], &["orders.*"]);
    assert_eq!(authorize(&admin, &Command::GetQueue { queue: "orders.eu".into() }), Ok(Decision::Allowed));
    let error = authorize(&admin, &Command::ListQueues).unwrap_err();
    assert!(error.to_string().contains("admin scope on all queues"), "{error}");
    assert_eq!(authorize(&grant(&[Scope::Admin], &[]), &Command::ListQueues), Ok(Decision::Allowed));
}

#[test]
fn commands_naming_tasks_are_checked_against_each_tasks_queue_under_a_limited_token() {
    let consumer = grant(&[Scope::Consume], &["orders.*"]);
    let queue_of = |id: TaskId| match id {
        1 => Some("orders.eu"),
        2 => Some("billing"),
        _ => None,
    };
    let complete = |id| Command::Complete { id, lease: 1, result: None };
    assert_eq!(authorize(&consumer, &complete(2)), Ok(Decision::CheckTaskQueues));
    assert_eq!(authorize(&grant(&[Scope::Consume], &[]), &complete(2)), Ok(Decision::Allowed));
    assert!(check_task_queues(&consumer, &complete(1), queue_of).is_ok());
    assert!(check_task_queues(&consumer, &complete(99), queue_of).is_ok(), "left to the engine: task_not_found");
    let error = check_task_queues(&consumer, &complete(2), queue_of).unwrap_err();
    assert_eq!(error.to_string(), "this credential lacks the consume scope on queue \"billing\" (task 2)");
    let items = [1, 99, 2].map(|id| CompleteItem { id, lease: 1, result: None }).to_vec();
    assert!(check_task_queues(&consumer, &Command::CompleteBatch { items }, queue_of).is_err());
    let reader = grant(&[Scope::Produce], &["orders.*"]);
    let error = check_task_queues(&reader, &Command::GetTask { id: 2 }, queue_of).unwrap_err();
    assert!(error.to_string().starts_with("this credential lacks the produce or consume scope"), "{error}");
    // Retry and delete of a dead letter: checked against the task's queue too.
    let producer = grant(&[Scope::Produce], &["orders.*"]);
    for command in [Command::RetryTask { id: 2 }, Command::DeleteTask { id: 2 }] {
        assert_eq!(authorize(&producer, &command), Ok(Decision::CheckTaskQueues));
        let error = check_task_queues(&producer, &command, queue_of).unwrap_err();
        assert_eq!(error.to_string(), "this credential lacks the produce scope on queue \"billing\" (task 2)");
    }
    assert!(check_task_queues(&producer, &Command::RetryTask { id: 1 }, queue_of).is_ok());
    // A listing names its queue: decided by `authorize` alone.
    let list = |queue: &str| Command::ListTasks { queue: queue.into(), state: TaskState::Dead, after: 0, limit: 1 };
    assert_eq!(authorize(&consumer, &list("orders.eu")), Ok(Decision::Allowed));
    assert!(authorize(&consumer, &list("billing")).unwrap_err().to_string().contains("\"billing\""));
    // Commands that name queues have nothing to check here.
    assert!(check_task_queues(&consumer, &Command::ListQueues, queue_of).is_ok());
}

fn table(lines: &[(&str, &str)], generation: u64) -> Tokens {
    let text: String = lines.iter().map(|(token, rest)| format!("sha256={} {rest}\n", hash_hex(token))).collect();
    Tokens::parse(&text).unwrap().with_generation(generation)
}

#[test]
fn a_session_rechecks_its_token_after_a_reload_and_loses_it_when_revoked() {
    let before = table(&[("a", "scopes=consume"), ("b", "scopes=produce")], 1);
    let mut session = Session::new();
    assert!(session.grant(&before).is_none(), "nothing before auth");
    assert!(session.authenticate(&before, b"a").is_some());
    assert!(session.grant(&before).unwrap().scopes().contains(Scope::Consume));
    // Reloaded with new scopes for "a": the next request sees them.
    let changed = table(&[("a", "scopes=admin"), ("b", "scopes=produce")], 2);
    assert!(session.grant(&changed).unwrap().scopes().contains(Scope::Admin));
    // Revoked: gone, and it stays gone even if a later table has it again
    // (the client must authenticate again).
    let revoked = table(&[("b", "scopes=produce")], 3);
    assert!(session.grant(&revoked).is_none());
    assert!(session.grant(&changed).is_none());
    // A failed auth drops an earlier success.
    assert!(session.authenticate(&revoked, b"b").is_some());
    assert!(session.authenticate(&revoked, b"nope").is_none());
    assert!(session.grant(&revoked).is_none());
}

#[test]
fn an_http_session_recognizes_the_same_token_and_looks_up_another() {
    let tokens = table(&[("a", "scopes=consume"), ("b", "scopes=produce")], 7);
    let mut session = Session::new();
    let a = PresentedToken::new(b"a").unwrap();
    let b = PresentedToken::new(b"b").unwrap();
    assert!(session.authenticate_presented(&tokens, &a).unwrap().scopes().contains(Scope::Consume));
    assert!(session.authenticate_presented(&tokens, &a).unwrap().scopes().contains(Scope::Consume));
    assert!(session.authenticate_presented(&tokens, &b).unwrap().scopes().contains(Scope::Produce));
    assert!(session.authenticate_presented(&tokens, &PresentedToken::new(b"c").unwrap()).is_none());
    // The same bytes after a reload that revoked them: refused.
    let reloaded = table(&[("b", "scopes=produce")], 8);
    assert!(session.authenticate_presented(&tokens, &a).is_some());
    assert!(session.authenticate_presented(&reloaded, &a).is_none());
    assert!(PresentedToken::new(&[b'x'; TOKEN_BYTES_MAX + 1]).is_none() && PresentedToken::new(b"").is_none());
    assert_eq!(format!("{a:?}"), "PresentedToken(1 bytes)", "Debug never shows a token");
}

#[test]
fn the_third_failure_closes_and_says_so() {
    let mut session = Session::new();
    assert!(!session.fail() && !session.fail());
    assert!(session.fail());
    let error = Session::failure_error(REFUSED, true);
    assert_eq!(error.code(), "unauthenticated");
    assert!(error.to_string().ends_with("closed after 3 failed authentications"), "{error}");
    assert_eq!(Session::failure_error(REFUSED, false).to_string(), REFUSED);
}

// ---- client certificates (mutual TLS) -----------------------------------------

/// A fingerprint as `openssl x509 -noout -fingerprint -sha256` prints it.
fn openssl_form(fingerprint: &CertificateFingerprint) -> String {
    fingerprint.bytes().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

#[test]
fn a_certificate_line_takes_the_fingerprint_with_or_without_colons_in_either_case() {
    let fingerprint = CertificateFingerprint::of(b"a certificate's DER");
    assert_eq!(fingerprint.bytes(), &hash_token(b"a certificate's DER"), "SHA-256 of the DER");
    let colons = openssl_form(&fingerprint);
    assert_eq!(fingerprint.to_string(), colons, "shown as openssl prints it");
    let forms =
        [colons.clone(), colons.to_lowercase(), colons.replace(':', ""), colons.replace(':', "").to_lowercase()];
    for form in &forms {
        let line =
            TokenLine::parse(&format!("cert-sha256={form} scopes=consume queues=orders.* name=worker-1")).unwrap();
        assert_eq!(line.holder, Holder::Certificate(fingerprint), "{form}");
        assert_eq!((line.grant.scopes().to_string(), line.grant.name()), ("consume".into(), Some("worker-1")));
        assert!(line.grant.covers("orders.x") && !line.grant.covers("billing"), "{form}");
        assert_eq!(TokenLine::parse(&line.to_string()).unwrap(), line, "round trip of {form}");
        assert!(line.to_string().starts_with(&format!("cert-sha256={colons} ")), "{line}");
    }
    // A table with tokens and certificates: each found by its own kind only.
    let text = format!("sha256={} scopes=admin\ncert-sha256={} scopes=produce\n", hash_hex("t"), forms[2]);
    let tokens = Tokens::parse(&text).unwrap();
    assert_eq!((tokens.len(), tokens.certificates_len(), tokens.is_empty()), (1, 1, false));
    assert_eq!(tokens.find_certificate(&fingerprint).unwrap().scopes().to_string(), "produce");
    assert!(tokens.find_certificate(&CertificateFingerprint::of(b"another")).is_none());
    assert!(tokens.find(fingerprint.bytes()).is_none(), "a fingerprint is not a token hash");
    let only_certificate = Tokens::parse(&format!("cert-sha256={colons} scopes=consume")).unwrap();
    assert!(!only_certificate.is_empty(), "a file of certificates only is not empty");
}

#[test]
fn a_malformed_certificate_line_refuses_the_file_naming_its_line() {
    let fingerprint = openssl_form(&CertificateFingerprint::of(b"x"));
    let bare = fingerprint.replace(':', "");
    let good = format!("cert-sha256={fingerprint} scopes=consume");
    let cases: Vec<(String, &str)> = vec![
        (format!("cert-sha256={} scopes=consume", &bare[..62]), "is not 64 hex digits"),
        (format!("cert-sha256={}G scopes=consume", &bare[..63]), "is not 64 hex digits"),
        (format!("cert-sha256={} scopes=consume", fingerprint.replacen(':', "-", 1)), "is not 64 hex digits"),
        (format!("cert-sha256={}: scopes=consume", &fingerprint), "is not 64 hex digits"),
        (format!("cert-sha256={bare} sha256={} scopes=consume", hash_hex("t")), "not both"),
        (format!("sha256={} cert-sha256={bare} scopes=consume", hash_hex("t")), "not both"),
        (format!("cert-sha256={bare}"), "no scopes="),
        (format!("cert-sha256={bare} scopes=consume queues=or*ders"), "`*` may only end"),
        (format!("cert-sha256={bare} cert-sha256={bare} scopes=consume"), "cert-sha256= is given twice"),
        (format!("cert-sha256={} scopes=admin", bare.to_lowercase()), "this cert-sha256 is already on an earlier line"),
    ];
    for (bad, expected) in cases {
        let text = format!("# certificates\n{good}\n\n{bad}\n");
        let error = Tokens::parse(&text).expect_err(&bad);
        assert_eq!(error.line, 4, "{bad}: {error}");
        assert!(error.to_string().starts_with("line 4: ") && error.reason.contains(expected), "{bad}: {error}");
    }
    // The same 32 bytes as a token hash and as a certificate are two lines, not a duplicate.
    let both = format!("sha256={} scopes=consume\ncert-sha256={bare} scopes=consume\n", bare.to_lowercase());
    assert!(Tokens::parse(&both).is_ok());
}

fn certificate_table(lines: &[(&[u8], &str)], generation: u64) -> Tokens {
    let text: String =
        lines.iter().map(|(der, rest)| format!("cert-sha256={} {rest}\n", CertificateFingerprint::of(der))).collect();
    Tokens::parse(&text).unwrap().with_generation(generation)
}

#[test]
fn a_certificate_session_has_its_grant_without_a_token_and_follows_reloads() {
    let worker = CertificateFingerprint::of(b"worker");
    let tokens = certificate_table(&[(b"worker", "scopes=consume queues=orders.*")], 1);
    let mut session = Session::with_certificate(&tokens, worker);
    let found = session.grant(&tokens).expect("the certificate's grant, without auth").clone();
    assert!(found.scopes().contains(Scope::Consume) && found.covers("orders.x") && !found.covers("billing"));
    assert_eq!(session.certificate_grant(&tokens), Some(&found), "the same for HTTP requests without a token");
    // Reloaded with other scopes, then without the line: the next request sees it.
    let changed = certificate_table(&[(b"worker", "scopes=produce")], 2);
    assert!(session.grant(&changed).unwrap().scopes().contains(Scope::Produce));
    let removed = certificate_table(&[(b"other", "scopes=admin")], 3);
    assert!(session.grant(&removed).is_none() && session.certificate_grant(&removed).is_none());
    // Added back: the certificate is presented with every request, so it counts again.
    let restored = certificate_table(&[(b"worker", "scopes=consume")], 4);
    assert!(session.grant(&restored).is_some());
    // A certificate the table does not map: nothing, as a connection without one.
    let mut unmapped = Session::with_certificate(&tokens, CertificateFingerprint::of(b"stranger"));
    assert!(unmapped.grant(&tokens).is_none() && unmapped.certificate_grant(&tokens).is_none());
    assert!(Session::new().certificate_grant(&tokens).is_none());
}

#[test]
fn a_token_replaces_the_certificate_for_an_http_request_and_for_the_rest_of_a_binary_connection() {
    let text = format!(
        "cert-sha256={} scopes=consume\nsha256={} scopes=produce\n",
        CertificateFingerprint::of(b"worker"),
        hash_hex("p")
    );
    let tokens = Tokens::parse(&text).unwrap().with_generation(1);
    let worker = CertificateFingerprint::of(b"worker");
    // HTTP: a Bearer token stands for its request; the next without one has
    // the certificate's grant again.
    let mut http = Session::with_certificate(&tokens, worker);
    let produce = PresentedToken::new(b"p").unwrap();
    assert!(http.authenticate_presented(&tokens, &produce).unwrap().scopes().contains(Scope::Produce));
    assert!(http.certificate_grant(&tokens).unwrap().scopes().contains(Scope::Consume));
    assert!(http.authenticate_presented(&tokens, &PresentedToken::new(b"wrong").unwrap()).is_none());
    assert!(http.certificate_grant(&tokens).is_some(), "a refused token does not cost the certificate");
    // Binary: auth replaces the certificate for the rest of the connection,
    // and a failed auth leaves it unauthenticated, as without a certificate.
    let mut binary = Session::with_certificate(&tokens, worker);
    assert!(binary.authenticate(&tokens, b"p").is_some());
    assert!(binary.grant(&tokens).unwrap().scopes().contains(Scope::Produce));
    let revoked = Tokens::parse(text.lines().next().unwrap()).unwrap().with_generation(2);
    assert!(binary.grant(&revoked).is_none(), "its token revoked: no fallback to the certificate");
    let mut failed = Session::with_certificate(&tokens, worker);
    assert!(failed.authenticate(&tokens, b"wrong").is_none());
    assert!(failed.grant(&tokens).is_none());
}
