//! The `tqx` command line against a real server (issue 19, item 6;
//! docs/cli.md): strict JSON bodies and where they come from, queue
//! administration, batch enqueue from JSON Lines, `tqx top --once`, `--json`,
//! and each documented exit code, over HTTP and `--binary`. One server per
//! test, in `memory` mode (nothing here is about the disk).

mod support;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use support::Server;

const MEMORY: &[&str] = &["--durability", "memory"];

struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// stdout as one JSON document (what `--json` prints for one reply).
    #[track_caller]
    fn json(&self) -> Value {
        assert_eq!(self.stdout.lines().count(), 1, "one document, one line: {}", self.stdout);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", self.stdout, self.stderr))
    }
}

/// Runs `tqx ARGS` with `input` on its standard input.
fn tqx_with_input(args: &[&str], input: &[u8]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tqx"))
        .args(args)
        .env_remove("TQX_SERVER")
        .env_remove("TQX_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tqx");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    Run {
        status: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn tqx(args: &[&str]) -> Run {
    tqx_with_input(args, b"")
}

/// `args` against `server` over HTTP and over `--binary`.
fn both(server: &Server, args: &[&str]) -> [Vec<String>; 2] {
    let http = format!("http://{}", server.addr);
    let binary = server.binary_addr.unwrap().to_string();
    let with = |extra: &[&str]| args.iter().chain(extra).map(|s| s.to_string()).collect();
    [with(&["--server", &http]), with(&["--binary", "--server", &binary])]
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn a_payload_that_is_not_json_exits_2_naming_line_and_column_and_nothing_is_enqueued() {
    let server = Server::start(MEMORY);
    let dir = tqx_testkit::TempDir::create(tqx_testkit::fresh_path("tqx-cli")).unwrap();
    let bad_file = write(dir.path(), "bad.json", b"{\"to\": \"a@b.c\",\n \"n\": nope}\n");
    for args in both(&server, &[]) {
        for payload in ["{\"to\": \"a@b.c\",\n \"n\": nope}", &format!("@{bad_file}")] {
            let run = tqx(&[&["enqueue", "mail", payload], &strs(&args)[..]].concat());
            assert_eq!(run.status, 2, "{args:?}: {}", run.stderr);
            assert!(run.stderr.contains("not valid JSON") && run.stderr.contains("line 2 column 8"), "{}", run.stderr);
        }
        let run = tqx_with_input(&[&["enqueue", "mail", "-"], &strs(&args)[..]].concat(), b"plain text");
        assert_eq!(run.status, 2, "{}", run.stderr);
        assert!(run.stderr.contains("standard input") && run.stderr.contains("line 1 column 1"), "{}", run.stderr);
        // A result is held to the same rule, before anything is sent.
        let run = tqx(&[&["complete", "1", "2", "--result", "{"], &strs(&args)[..]].concat());
        assert_eq!(run.status, 2, "{}", run.stderr);
        let missing = tqx(&[&["enqueue", "mail", "@/no/such/file"], &strs(&args)[..]].concat());
        assert_eq!(missing.status, 2, "{}", missing.stderr);
        assert!(missing.stderr.contains("/no/such/file"), "{}", missing.stderr);
    }
    let listed = tqx(&["queue", "list", "--json", "--server", &format!("http://{}", server.addr)]);
    assert_eq!((listed.status, listed.json()), (0, json!({"queues": []})), "nothing was enqueued: {}", listed.stderr);
}

#[test]
fn bodies_come_from_text_a_file_or_stdin_exactly_and_raw_sends_text_as_it_is() {
    let server = Server::start(MEMORY);
    let dir = tqx_testkit::TempDir::create(tqx_testkit::fresh_path("tqx-cli")).unwrap();
    let file = write(dir.path(), "payload.json", b"\n {\"x\": [1, 2.50]}\n");
    let [http, binary] = both(&server, &[]);
    let mut client = server.client();
    let payload_of = |client: &mut support::Client, run: &Run| -> String {
        assert_eq!(run.status, 0, "{}", run.stderr);
        let id = run.json()["id"].as_str().unwrap().to_string();
        let text = client.get(&format!("/v1/tasks/{id}")).raw_text();
        let body = text.trim_end();
        let start = body.find("\"payload\":").unwrap() + "\"payload\":".len();
        let end = body.find(",\"priority\"").unwrap();
        body[start..end].to_string()
    };
    for args in [&http, &binary] {
        let args = strs(args);
        let run = tqx(&[&["enqueue", "q", &format!("@{file}"), "--json"], &args[..]].concat());
        assert_eq!(payload_of(&mut client, &run), r#"{"x": [1, 2.50]}"#, "the file's value, byte for byte");
        let run = tqx_with_input(&[&["enqueue", "q", "-", "--json"], &args[..]].concat(), b"[true, null]\n");
        assert_eq!(payload_of(&mut client, &run), "[true, null]");
        let run = tqx(&[&["enqueue", "q", "1.50", "--json"], &args[..]].concat());
        assert_eq!(payload_of(&mut client, &run), "1.50");
    }
    // --raw: over HTTP the exact text as a JSON string; over --binary the bytes.
    let run = tqx_with_input(&[&["enqueue", "q", "-", "--raw", "--json"], &strs(&http)[..]].concat(), b"say \"hi\"\n");
    assert_eq!(payload_of(&mut client, &run), r#""say \"hi\"\n""#);
    let run = tqx(&[&["enqueue", "q", "not json", "--raw", "--json"], &strs(&binary)[..]].concat());
    let id = run.json()["id"].as_str().unwrap().to_string();
    let task = client.task(&id);
    assert_eq!((&task["payload"], &task["payload_base64"]), (&Value::Null, &json!("bm90IGpzb24=")), "{task}");

    // A result from a file, exactly.
    let result = write(dir.path(), "result.json", b"{\"sent\": 1.0}");
    let leased = client.dequeue(&["q"], 1);
    let (id, lease) = (leased[0]["id"].as_str().unwrap(), leased[0]["lease"].as_str().unwrap());
    let run = tqx(&[&["complete", id, lease, "--result", &format!("@{result}")], &strs(&http)[..]].concat());
    assert_eq!(run.status, 0, "{}", run.stderr);
    let text = client.get(&format!("/v1/tasks/{id}")).raw_text();
    assert!(text.contains(r#""result":{"sent": 1.0}"#), "{text}");
}

#[test]
fn queues_are_created_configured_listed_shown_and_deleted_over_both_protocols() {
    let server = Server::start(MEMORY);
    for (n, args) in both(&server, &[]).iter().enumerate() {
        let args = strs(args);
        let name = format!("jobs{n}");
        let run = |more: &[&str]| tqx(&[more, &args[..]].concat());
        let created = run(&[
            "queue",
            "create",
            &name,
            "--mode",
            "priority",
            "--max-attempts",
            "5",
            "--group-concurrency",
            "2",
            "--json",
        ]);
        assert_eq!(created.status, 0, "{}", created.stderr);
        let config = &created.json()["config"];
        assert_eq!(
            (&config["discipline"], &config["max_attempts"], &config["group_concurrency"]),
            (&json!("priority"), &json!(5), &json!(2))
        );

        let missing = run(&["queue", "configure", "nope", "--lease-ms", "1000"]);
        assert_eq!(missing.status, 3, "configure does not create: {}", missing.stderr);
        assert!(missing.stderr.contains("queue create nope"), "{}", missing.stderr);
        let configured =
            run(&["queue", "configure", &name, "--lease-ms", "1000", "--group-concurrency", "none", "--json"]);
        assert_eq!(configured.status, 0, "{}", configured.stderr);
        let config = &configured.json()["config"];
        assert_eq!(
            (&config["lease_ms"], &config["discipline"], &config["group_concurrency"]),
            (&json!(1000), &json!("priority"), &Value::Null)
        );

        assert_eq!(run(&["enqueue", &name, "{}"]).status, 0);
        // The table: one row per queue, its counts by state.
        let listed = run(&["queue", "list"]);
        assert_eq!(listed.status, 0, "{}", listed.stderr);
        assert!(listed.stdout.starts_with("QUEUE"), "{}", listed.stdout);
        let row = listed.stdout.lines().find(|l| l.starts_with(&name)).unwrap_or_else(|| panic!("{}", listed.stdout));
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            [&name[..], "priority", "0", "0", "1", "0", "0", "0", "0"]
        );
        assert_eq!(run(&["queues", "--json"]).json(), run(&["queue", "list", "--json"]).json());
        let stats = run(&["queue", "stats", &name]);
        assert!(stats.stdout.lines().any(|l| l.split_whitespace().eq(["ready", "1"])), "{}", stats.stdout);
        assert_eq!(run(&["queue", &name, "--json"]).json()["counts"]["ready"], json!(1), "the old form stays");

        let refused = run(&["queue", "delete", &name]);
        assert_eq!(refused.status, 4, "queue_not_empty is a conflict: {}", refused.stderr);
        assert!(refused.stderr.contains("queue_not_empty"), "{}", refused.stderr);
        let deleted = run(&["queue", "delete", &name, "--force", "--json"]);
        assert_eq!((deleted.status, deleted.json()), (0, json!({"deleted": name})), "{}", deleted.stderr);
        assert_eq!(run(&["queue", "stats", &name]).status, 3);
    }
}

#[test]
fn enqueue_batch_checks_every_line_before_sending_and_sends_in_batches() {
    let server = Server::start(MEMORY);
    let dir = tqx_testkit::TempDir::create(tqx_testkit::fresh_path("tqx-cli")).unwrap();
    let bad = write(dir.path(), "bad.jsonl", b"{\"n\": 1}\n\n{\"n\": 2}\n{\"n\": 3,}\n{\"n\": 4}\n");
    let [http, binary] = both(&server, &[]);
    let run = tqx(&[&["enqueue-batch", "bulk", &bad], &strs(&http)[..]].concat());
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains(", line 4, column ") && run.stderr.contains("nothing was sent"), "{}", run.stderr);
    assert_eq!(tqx(&[&["queue", "stats", "bulk"], &strs(&http)[..]].concat()).status, 3, "nothing was sent");

    let good = write(dir.path(), "good.jsonl", b"{\"n\": 1}\n\n{\"n\": 2}\n{\"n\": 3}\n{\"n\": 4}\n[5]\n");
    let run = tqx(&[&["enqueue-batch", "bulk", &good, "--batch-size", "2"], &strs(&http)[..]].concat());
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert_eq!(run.stdout.trim(), format!("enqueued 5 tasks into bulk in 3 batches (from {good})"));
    assert!(run.stderr.is_empty(), "no progress bar when stderr is not a terminal: {:?}", run.stderr);
    // Task objects from standard input, over --binary; --json prints each batch's reply.
    let lines = b"{\"payload\": {\"n\": 6}, \"priority\": 3}\n{\"payload\": 7, \"key\": \"k7\"}\n{\"payload\": 8}\n";
    let run = tqx_with_input(
        &[&["enqueue-batch", "bulk", "-", "--tasks", "--batch-size", "2", "--json"], &strs(&binary)[..]].concat(),
        lines,
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    let replies: Vec<Value> = run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        replies.iter().map(|r| r["ids"].as_array().unwrap().len()).collect::<Vec<_>>(),
        [2, 1],
        "{}",
        run.stdout
    );
    let mut client = server.client();
    let six = client.task(replies[0]["ids"][0].as_str().unwrap());
    assert_eq!((&six["payload"], &six["priority"]), (&json!({"n": 6}), &json!(3)));
    let queue = tqx(&[&["queue", "stats", "bulk", "--json"], &strs(&http)[..]].concat()).json();
    assert_eq!(queue["counts"]["ready"], json!(8));

    // A batch the server refuses: what was sent before it is said.
    let refused = write(dir.path(), "refused.jsonl", b"1\n2\n3\n{\"payload\": 4, \"depends_on\": [999999]}\n");
    let run = tqx(&[&["enqueue-batch", "bulk", &refused, "--tasks", "--batch-size", "2"], &strs(&http)[..]].concat());
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains("column 1"), "a payload line is not a task object: {}", run.stderr);
    let refused = write(
        dir.path(),
        "refused2.jsonl",
        b"{\"payload\": 1}\n{\"payload\": 2}\n{\"payload\": 3, \"depends_on\": [999999]}\n",
    );
    let run = tqx(&[&["enqueue-batch", "bulk", &refused, "--tasks", "--batch-size", "2"], &strs(&http)[..]].concat());
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("2 tasks (lines 1 to 2, 1 batch) were enqueued")
            && run.stderr.contains("the batch of lines 3 to 3"),
        "{}",
        run.stderr
    );
}

#[test]
fn each_failure_has_its_documented_exit_code_over_both_protocols() {
    let server = Server::start(MEMORY);
    let mut client = server.client();
    let id = client.enqueue("q", json!({"payload": 1}));
    for args in both(&server, &[]) {
        let run = |more: &[&str]| tqx(&[more, &strs(&args)[..]].concat());
        let not_found = run(&["task", "424242"]);
        assert_eq!(not_found.status, 3, "{}", not_found.stderr);
        assert!(not_found.stderr.contains("task_not_found"), "{}", not_found.stderr);
        assert_eq!(run(&["tasks", "nope"]).status, 3, "an unknown queue");
        let conflict = run(&["retry", &id]);
        assert_eq!(conflict.status, 4, "a ready task is not dead: {}", conflict.stderr);
        assert!(conflict.stderr.contains("task_not_dead"), "{}", conflict.stderr);
        let invalid = run(&["enqueue", "bad/name", "1"]);
        assert_eq!(invalid.status, 2, "the server's invalid_argument: {}", invalid.stderr);
    }
    // Usage: clap's own.
    assert_eq!(tqx(&["enqueue", "q", "1", "--no-such-flag"]).status, 2);
    assert_eq!(tqx(&["queues", "--server", "ftp://x"]).status, 2);
    // Unavailable: no server there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let http = tqx(&["queues", "--server", &format!("http://{closed}")]);
    assert_eq!(http.status, 5, "{}", http.stderr);
    assert!(http.stderr.contains("cannot connect"), "{}", http.stderr);
    let binary = tqx(&["top", "--once", "--binary", "--server", &closed.to_string()]);
    assert_eq!(binary.status, 5, "{}", binary.stderr);
}

#[test]
fn a_missing_refused_or_too_narrow_token_exits_6() {
    let dir = tqx_testkit::TempDir::create(tqx_testkit::fresh_path("tqx-cli")).unwrap();
    let tokens = dir.path().join("tokens");
    let tokens_arg = tokens.to_str().unwrap();
    let created = tqx(&["token", "create", "--scope", "produce", "--file", tokens_arg]);
    assert_eq!(created.status, 0, "{}", created.stderr);
    let producer = created.stdout.trim().to_string();
    let server = Server::start(&[MEMORY, &["--tokens", tokens_arg]].concat());
    for args in both(&server, &[]) {
        let run = |more: &[&str]| tqx(&[more, &strs(&args)[..]].concat());
        let missing = run(&["enqueue", "q", "1"]);
        assert_eq!(missing.status, 6, "{}", missing.stderr);
        assert!(missing.stderr.contains("requires a token"), "{}", missing.stderr);
        assert_eq!(run(&["enqueue", "q", "1", "--token", "tqx_not_a_token"]).status, 6);
        let narrow = run(&["queue", "list", "--token", &producer]);
        assert_eq!(narrow.status, 6, "listing queues needs admin: {}", narrow.stderr);
        assert!(narrow.stderr.contains("forbidden"), "{}", narrow.stderr);
        assert_eq!(run(&["enqueue", "q", "1", "--token", &producer]).status, 0);
    }
}

#[test]
fn top_once_shows_each_queue_with_its_counts_and_json_is_the_stats_document() {
    let server = Server::start(MEMORY);
    let mut client = server.client();
    for n in 0..3 {
        client.enqueue("emails", json!({"payload": n}));
    }
    assert_eq!(client.dequeue(&["emails"], 1).len(), 1);
    for args in both(&server, &[]) {
        let once = tqx(&[&["top", "--once"], &strs(&args)[..]].concat());
        assert_eq!(once.status, 0, "{}", once.stderr);
        assert!(!once.stdout.contains('\x1b'), "no escape codes off a terminal: {:?}", once.stdout);
        let row = once.stdout.lines().find(|l| l.starts_with("emails")).unwrap_or_else(|| panic!("{}", once.stdout));
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            ["emails", "0", "0", "2", "1", "0", "0", "0"],
            "{}",
            once.stdout
        );
        assert!(once.stdout.contains("enqueued"), "{}", once.stdout);
        let json = tqx(&[&["top", "--once", "--json"], &strs(&args)[..]].concat()).json();
        assert_eq!(json["queues"][0]["counts"]["leased"], json!(1), "{json}");
    }
}

/// On a terminal (a pseudo-terminal from util-linux's `script`, part of every
/// Debian system), `tqx top` draws in the alternate screen, and `q` quits with
/// exit 0 and the terminal restored (main screen, cursor shown).
#[test]
fn top_on_a_terminal_redraws_in_place_and_q_quits_restoring_the_terminal() {
    use std::io::Read as _;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    let server = Server::start(MEMORY);
    server.client().enqueue("emails", json!({"payload": 1}));
    let command = format!("{} top --interval-ms 200 --server http://{}", env!("CARGO_BIN_EXE_tqx"), server.addr);
    let mut child = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env_remove("TQX_SERVER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run script (util-linux)");
    let mut stdout = child.stdout.take().unwrap();
    let (chunks, received) = mpsc::channel();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(read @ 1..) = stdout.read(&mut chunk) {
            let _ = chunks.send(chunk[..read].to_vec());
        }
    });
    // Far above any real delay: the test waits for what it needs, never for a time.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut output = Vec::new();
    let frames_seen = |output: &mut Vec<u8>, frames: usize| {
        while String::from_utf8_lossy(output).matches("(q quits)").count() < frames {
            let left = deadline.saturating_duration_since(Instant::now());
            match received.recv_timeout(left) {
                Ok(chunk) => output.extend(chunk),
                Err(_) => return false,
            }
        }
        true
    };
    // Two frames: the first and one redrawn (rates over the last interval).
    let drawn = frames_seen(&mut output, 2);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"q").unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(stdin);
    while let Ok(chunk) = received.recv_timeout(Duration::from_secs(2)) {
        output.extend(chunk);
    }
    let text = String::from_utf8_lossy(&output);
    assert!(drawn, "two frames within 30 s: {text:?}");
    assert!(status.is_some_and(|s| s.success()), "q quits with exit 0: {status:?}; {text:?}");
    assert!(text.starts_with("\x1b[?1049h\x1b[?25l"), "the alternate screen, cursor hidden: {text:?}");
    assert!(text.contains("over the last"), "a redrawn frame has rates over the interval: {text:?}");
    assert!(text.trim_end().ends_with("\x1b[?25h\x1b[?1049l"), "the terminal restored on the way out: {text:?}");
}
