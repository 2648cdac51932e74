//! `GET /metrics`, `GET /v1/stats` and the binary `stats` request against the
//! real server (docs/metrics.md): traffic on both protocols moves the
//! counters it should, the exposition passes `promtool check metrics`
//! (Debian's `prometheus` package; `tools/test` installs it), the JSON agrees
//! with it, and both need `admin` on every queue when tokens are on.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use support::Server;
use tqx_client::ClientOptions;

/// Runs `promtool check metrics` on `text`; fails (with an install hint) if
/// promtool is missing rather than skipping: the check is the point.
fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => panic!(
            "cannot run promtool ({error}): install Debian's `prometheus` package (apt-get install prometheus), \
             which tools/test does through tools/env.sh"
        ),
    };
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write to promtool");
    let output = child.wait_with_output().expect("promtool ran");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool check metrics failed:\n{report}\n--- exposition:\n{text}");
}

/// The value of the sample `name{labels}` (labels exactly as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn binary_client(server: &Server, options: ClientOptions) -> tqx_client::blocking::Client {
    let addr = server.binary_addr.expect("a binary address").to_string();
    tqx_client::blocking::Client::connect(&addr, options).expect("binary connect")
}

#[test]
fn traffic_on_both_protocols_moves_the_counters_and_the_exposition_passes_promtool() {
    let server = Server::start(&["--durability", "sync"]);
    let mut http = server.client();
    const HTTP_ENQUEUES: usize = 7;
    const BINARY_ENQUEUES: usize = 5;
    for n in 0..HTTP_ENQUEUES {
        let response = http.post("/v1/queues/emails/tasks", json!({"payload": {"n": n}}));
        assert_eq!(response.status, 201, "{response:?}");
    }
    assert_eq!(http.get("/v1/queues/nope").status, 404);
    assert_eq!(http.get("/no/such/path").status, 404);
    let binary = binary_client(&server, ClientOptions::default());
    for n in 0..BINARY_ENQUEUES {
        let task = tqx_wire::TaskSpec { payload: format!("{n}").into_bytes().into(), ..Default::default() };
        binary.enqueue("emails", task).expect("binary enqueue");
    }
    let leased = binary.dequeue(&["emails"], 3, None, 0).expect("dequeue");
    assert_eq!(leased.len(), 3);
    for task in &leased {
        binary.complete(task.id, task.lease, None).expect("complete");
    }
    // One more fails for good and is retried: a retry's reply (`ready`) is
    // not a failed attempt's.
    let doomed = binary.dequeue(&["emails"], 1, None, 0).expect("dequeue").remove(0);
    assert_eq!(binary.fail(doomed.id, doomed.lease, "broken", false).expect("fail"), tqx_wire::TaskState::Dead);
    assert_eq!(binary.retry_task(doomed.id).expect("retry"), tqx_wire::TaskState::Ready);

    let response = http.get("/metrics");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = response.raw_text();
    promtool_check(&text);

    let requests = |protocol: &str, op: &str, outcome: &str| {
        sample(&text, &format!("tqx_requests_total{{protocol=\"{protocol}\",op=\"{op}\",outcome=\"{outcome}\"}}"))
    };
    assert_eq!(requests("http", "enqueue", "ok"), Some(HTTP_ENQUEUES as f64), "{text}");
    assert_eq!(requests("binary", "enqueue", "ok"), Some(BINARY_ENQUEUES as f64), "{text}");
    assert_eq!(requests("binary", "dequeue", "ok"), Some(2.0));
    assert_eq!(requests("binary", "complete", "ok"), Some(3.0));
    assert_eq!(requests("binary", "hello", "ok"), Some(1.0), "the handshake is counted too");
    assert_eq!(requests("http", "get_queue", "queue_not_found"), Some(1.0));
    assert_eq!(requests("http", "other", "not_found"), Some(1.0), "an unknown path");
    let enqueues = sample(&text, "tqx_request_duration_seconds_count{protocol=\"http\",op=\"enqueue\"}");
    assert_eq!(enqueues, Some(HTTP_ENQUEUES as f64), "every executed enqueue is timed");
    assert!(text.contains("tqx_request_latency_seconds{protocol=\"binary\",op=\"enqueue\",quantile=\"0.999\"}"));
    let events = |event: &str| sample(&text, &format!("tqx_task_events_total{{event=\"{event}\"}}"));
    assert_eq!(events("enqueued"), Some((HTTP_ENQUEUES + BINARY_ENQUEUES) as f64));
    assert_eq!(events("leased"), Some(4.0));
    assert_eq!(events("completed"), Some(3.0));
    assert_eq!((events("failed"), events("dead"), events("retried")), (Some(1.0), Some(1.0), Some(1.0)));
    let ready = (HTTP_ENQUEUES + BINARY_ENQUEUES - 3) as f64;
    assert_eq!(sample(&text, "tqx_tasks{queue=\"emails\",state=\"ready\"}"), Some(ready));
    assert_eq!(sample(&text, "tqx_tasks{queue=\"emails\",state=\"completed\"}"), Some(3.0));
    assert_eq!(sample(&text, "tqx_connections_open{protocol=\"binary\"}"), Some(1.0));
    // The test's HTTP client, and the health probes of the start.
    let accepted = sample(&text, "tqx_connections_accepted_total{protocol=\"http\"}");
    assert!(accepted.is_some_and(|n| n >= 1.0), "{accepted:?}");
    // Every state change was logged and synced (sync mode): at least one
    // record per enqueue, dequeue, complete, fail and retry.
    let records = sample(&text, "tqx_wal_records_total").expect("WAL records in sync mode");
    assert!(records >= (HTTP_ENQUEUES + BINARY_ENQUEUES + 2 + 3 + 2) as f64, "{records}");
    assert!(sample(&text, "tqx_wal_syncs_total").is_some_and(|syncs| syncs >= 1.0));
    assert!(sample(&text, "process_resident_memory_bytes").is_some_and(|bytes| bytes > 1e6));
    assert!(sample(&text, "process_open_fds").is_some_and(|fds| fds >= 4.0));

    // The JSON document says the same.
    let stats = http.get("/v1/stats");
    assert_eq!(stats.status, 200, "{stats:?}");
    let body = &stats.body;
    assert_eq!(body["task_events"]["enqueued"], json!(HTTP_ENQUEUES + BINARY_ENQUEUES));
    assert_eq!(body["queues"][0]["name"], "emails");
    assert_eq!(body["queues"][0]["counts"]["ready"], json!(ready as u64));
    let count_of = |document: &Value, protocol: &str, op: &str| {
        document["requests"]
            .as_array()
            .expect("requests")
            .iter()
            .find(|r| r["protocol"] == protocol && r["op"] == op && r["outcome"] == "ok")
            .map(|r| r["count"].clone())
    };
    assert_eq!(count_of(body, "binary", "enqueue"), Some(json!(BINARY_ENQUEUES)));
    let latency = body["latency"].as_array().expect("latency").iter().find(|l| l["op"] == "enqueue").cloned();
    let latency = latency.expect("enqueue latency");
    assert!(latency["p50_seconds"].as_f64().is_some_and(|p50| p50 > 0.0), "{latency}");
    assert!(latency["p999_seconds"].as_f64() >= latency["p50_seconds"].as_f64(), "{latency}");
    assert!(body["wal"]["syncs"].as_u64().is_some_and(|syncs| syncs >= 1));

    // And so does the binary `stats` request (the same JSON document).
    let document = binary.stats().expect("binary stats");
    let document: Value = serde_json::from_slice(&document).expect("the stats reply is JSON");
    assert_eq!(document["task_events"], body["task_events"]);
    assert_eq!(document["queues"], body["queues"]);
    assert_eq!(
        count_of(&document, "http", "stats"),
        Some(json!(1)),
        "the JSON scrape before it was counted: {document}"
    );
}

#[test]
fn with_no_metrics_requests_are_not_counted_and_the_rest_still_is() {
    let server = Server::start(&["--no-metrics"]);
    let mut http = server.client();
    assert_eq!(http.post("/v1/queues/q/tasks", json!({"payload": 1})).status, 201);
    let text = http.get("/metrics").raw_text();
    promtool_check(&text);
    assert_eq!(sample(&text, "tqx_metrics_enabled"), Some(0.0));
    assert!(!text.contains("tqx_requests_total{"), "{text}");
    assert_eq!(sample(&text, "tqx_tasks{queue=\"q\",state=\"ready\"}"), Some(1.0));
    let accepted = sample(&text, "tqx_connections_accepted_total{protocol=\"http\"}");
    assert!(accepted.is_some_and(|n| n >= 1.0), "connections are counted with --no-metrics too: {accepted:?}");
}

#[test]
fn with_tokens_metrics_and_stats_need_admin_on_every_queue() {
    let dir = support::fresh_dir();
    std::fs::create_dir_all(&dir).expect("dir");
    let tokens = dir.join("tokens");
    let line = |token: &str, grants: &str| {
        let hash: String = {
            use sha2::Digest as _;
            sha2::Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
        };
        format!("sha256={hash} {grants}\n")
    };
    let admin = "tqx_admin_token_for_the_metrics_test";
    let producer = "tqx_producer_token_for_the_metrics_test";
    let limited_admin = "tqx_limited_admin_token_for_the_metrics_test";
    let file = line(admin, "scopes=admin")
        + &line(producer, "scopes=produce")
        + &line(limited_admin, "scopes=admin queues=a.*");
    std::fs::write(&tokens, file).expect("token file");
    let server = Server::start(&["--tokens", tokens.to_str().expect("utf-8 path")]);
    let get = |path: &str, token: Option<&str>| {
        let mut client = server.client();
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        client.send_raw(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").as_bytes());
        client.read_response().unwrap_or_else(|error| panic!("GET {path}: no response: {error:?}"))
    };
    for path in ["/metrics", "/v1/stats"] {
        assert_eq!(get(path, None).status, 401, "{path} without a token");
        assert_eq!(get(path, Some(producer)).status, 403, "{path} with produce only");
        assert_eq!(get(path, Some(limited_admin)).status, 403, "{path} with admin on some queues");
        assert_eq!(get(path, Some(admin)).status, 200, "{path} with admin");
    }
    let options =
        |token: &str| ClientOptions { token: Some(tqx_client::Token::new(token)), ..ClientOptions::default() };
    let refused = binary_client(&server, options(producer)).stats().expect_err("produce may not read stats");
    assert!(format!("{refused:?}").contains("forbidden") || format!("{refused}").contains("forbidden"), "{refused}");
    assert!(binary_client(&server, options(admin)).stats().is_ok());
}
