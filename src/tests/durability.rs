//! Durability through the real server: replies wait for the sync of their record,
//! acknowledged state survives `kill -9`, recovery gates `/healthz`, corruption
//! refuses to start. Real `tqx serve` processes, real files, real fsync.
//!
//! Syncs are held open with the server's test hook `--debug-wal-sync-gate FIFO`:
//! each WAL sync first reads one byte from the FIFO, which the test holds open.

mod support;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use support::{fresh_dir, request_bytes, ReadError, Server, SyncGate};

/// How long a reply that must wait is watched for arriving too early. It cannot
/// make the test fail wrongly: while the gate is closed the reply cannot come.
const HELD_WATCH: Duration = Duration::from_millis(300);

#[test]
fn a_sync_mode_reply_and_every_read_or_lease_showing_its_write_wait_for_its_sync() {
    let dir = fresh_dir();
    let mut gate = SyncGate::new(&dir);
    gate.release(1); // the new log's first record (the engine seed)
    let gate_arg = gate.arg();
    let server = Server::launch(dir, &["--debug-wal-sync-gate", &gate_arg]);
    server.wait_healthy();

    let mut producer = server.client();
    let body = serde_json::to_vec(&json!({"payload": "order-1"})).unwrap();
    producer.send_raw(&request_bytes("POST", "/v1/queues/orders/tasks", Some(&body)));
    // A read of the task, once the enqueue has executed, shows a record not
    // yet durable, so it waits with the enqueue's reply while the sync is
    // held (no client sees state a crash can take back: docs/durability.md).
    // A read that comes before the enqueue executed shows nothing new and
    // is answered `404` at once: then ask again.
    let mut reader = server.client();
    reader.set_read_timeout(HELD_WATCH);
    loop {
        reader.send_raw(&request_bytes("GET", "/v1/tasks/1", None));
        match reader.read_response() {
            Err(ReadError::TimedOut) => break,
            Ok(response) => assert_eq!(response.status, 404, "a read showed a task whose enqueue was not synced"),
            Err(error) => panic!("{error:?}"),
        }
    }
    producer.set_read_timeout(HELD_WATCH);
    assert!(
        matches!(producer.read_response(), Err(ReadError::TimedOut)),
        "the enqueue was acknowledged before its record was synced"
    );
    gate.release(1);
    producer.set_read_timeout(support::READ_TIMEOUT);
    let reply = producer.read_response().expect("the reply after the sync");
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(reply.body, json!({"id": "1", "state": "ready"}));
    reader.set_read_timeout(support::READ_TIMEOUT);
    let read = reader.read_response().expect("the read after the sync");
    assert_eq!((read.status, &read.body["state"]), (200, &json!("ready")), "{read:?}");

    // A lease is state too: it waits for its own record's sync.
    let body = serde_json::to_vec(&json!({"queues": ["orders"], "max": 1})).unwrap();
    reader.send_raw(&request_bytes("POST", "/v1/dequeue", Some(&body)));
    reader.set_read_timeout(HELD_WATCH);
    assert!(matches!(reader.read_response(), Err(ReadError::TimedOut)), "a lease was answered before its sync");
    gate.release(1);
    reader.set_read_timeout(support::READ_TIMEOUT);
    let leased = reader.read_response().expect("the lease after the sync");
    assert_eq!(leased.status, 200, "{leased:?}");
    // Let any later syncs through so the server stops cleanly.
    gate.release(16);
}

#[test]
fn health_and_commands_answer_503_recovering_until_recovery_is_done() {
    let dir = fresh_dir();
    let mut gate = SyncGate::new(&dir);
    let gate_arg = gate.arg();
    // Recovery of a new log syncs its first record; the gate holds it there.
    let server = Server::launch(dir, &["--debug-wal-sync-gate", &gate_arg]);
    let mut client = server.client();
    let health = client.get("/healthz");
    assert_eq!((health.status, health.body.clone()), (503, json!({"status": "recovering"})), "{health:?}");
    let enqueue = client.post("/v1/queues/q/tasks", json!({"payload": 1}));
    assert_eq!(enqueue.status, 503, "{enqueue:?}");
    assert_eq!(enqueue.body["error"]["code"], "recovering");
    assert_eq!(enqueue.header("retry-after"), Some("1"));
    gate.release(1);
    server.wait_healthy();
    gate.release(16);
    assert_eq!(client.post("/v1/queues/q/tasks", json!({"payload": 1})).status, 201);
}

/// Everything observable about the tasks `ids` and all queues.
fn state(client: &mut support::Client, ids: &[String]) -> Value {
    let tasks: Vec<Value> = ids
        .iter()
        .map(|id| {
            let response = client.get(&format!("/v1/tasks/{id}"));
            json!({"status": response.status, "body": response.body})
        })
        .collect();
    json!({"tasks": tasks, "queues": client.get("/v1/queues").body})
}

/// Makes everything executed so far durable before a crash: a lease's reply does
/// not wait for its sync (docs/durability.md), but a queue configuration's does,
/// and the log is sequential, so once it is answered every earlier record is on
/// disk. Without it, a kill right after a dequeue may lose the lease (allowed:
/// the task is delivered again), and the states compared would differ.
fn sync_barrier(client: &mut support::Client) {
    client.create_queue("sync-barrier", json!({}));
}

#[test]
fn acknowledged_state_is_the_same_after_kill_9_and_restart() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.create_queue("prio", json!({"discipline": "priority", "lease_ms": 600_000, "max_attempts": 3}));
    client.create_queue("rr", json!({"discipline": "round_robin", "group_concurrency": 1}));
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(client.enqueue("prio", json!({"payload": {"n": i}, "priority": i % 3, "key": format!("k{i}")})));
    }
    for group in ["a", "b", "a", "c"] {
        ids.push(client.enqueue("rr", json!({"payload": group, "group": group})));
    }
    ids.push(client.enqueue("prio", json!({"payload": "later", "delay_ms": 3_600_000})));
    let parent = ids[0].clone();
    ids.push(client.enqueue("other", json!({"payload": "child", "depends_on": [parent]})));
    let batch = client.post(
        "/v1/queues/other/tasks/batch",
        json!({"tasks": [{"payload": "x"}, {"payload": "y", "depends_on": ["#0"]}]}),
    );
    assert_eq!(batch.status, 201, "{batch:?}");
    ids.extend(batch.body["ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_string()));

    let leased = client.dequeue(&["prio"], 3);
    assert_eq!(leased.len(), 3);
    let lease = |task: &Value| task["lease"].as_str().unwrap().to_string();
    let (first, second, third) = (&leased[0], &leased[1], &leased[2]);
    let done = client.post(
        &format!("/v1/tasks/{}/complete", first["id"].as_str().unwrap()),
        json!({"lease": lease(first), "result": {"ok": true}}),
    );
    assert_eq!(done.status, 200, "{done:?}");
    let failed = client.post(
        &format!("/v1/tasks/{}/fail", second["id"].as_str().unwrap()),
        json!({"lease": lease(second), "error": "boom", "retry": false}),
    );
    assert_eq!(failed.status, 200, "{failed:?}");
    assert_eq!(client.delete(&format!("/v1/tasks/{}", ids[4])).status, 200);
    assert_eq!(client.dequeue(&["rr"], 10).len(), 3, "one per group under group_concurrency 1");
    sync_barrier(&mut client);
    let before = state(&mut client, &ids);

    let server = server.crash_and_restart(&[]);
    let mut client = server.client();
    assert_eq!(state(&mut client, &ids), before);
    // The lease taken before the crash is still valid: tokens replay identically.
    let done =
        client.post(&format!("/v1/tasks/{}/complete", third["id"].as_str().unwrap()), json!({"lease": lease(third)}));
    assert_eq!(done.status, 200, "{done:?}");
    // New ids continue after the old ones; idempotency keys are remembered.
    let again = client.post("/v1/queues/prio/tasks", json!({"payload": "dup", "key": "k5"}));
    assert_eq!((again.status, again.body["id"].clone()), (200, json!(ids[5])), "{again:?}");
    let next = client.enqueue("prio", json!({"payload": "new"}));
    assert_eq!(next.parse::<u64>().unwrap(), ids.len() as u64 + 1);
    server.assert_healthy();
}

#[test]
fn interval_mode_keeps_what_a_clean_stop_flushed_and_memory_mode_keeps_nothing() {
    let server = Server::start(&["--durability", "interval:50"]);
    let mut client = server.client();
    let id = client.enqueue("q", json!({"payload": "kept"}));
    let server = server.stop_and_restart(&["--durability", "interval:50"]);
    assert_eq!(server.client().task(&id)["payload"], "kept");

    let server = server.stop_and_restart(&["--durability", "memory"]);
    let mut client = server.client();
    assert_eq!(client.get(&format!("/v1/tasks/{id}")).status, 404, "memory mode ignores the log");
    client.enqueue("q", json!({"payload": "lost"}));
    // Back to sync: the log still holds what interval mode wrote, nothing of memory mode.
    let server = server.stop_and_restart(&[]);
    let mut client = server.client();
    assert_eq!(client.task(&id)["payload"], "kept");
    assert_eq!(client.get("/v1/tasks/2").status, 404);
}

#[test]
fn a_damaged_record_before_the_end_refuses_to_start_naming_the_file_and_offset() {
    let server = Server::start(&[]);
    let mut client = server.client();
    for i in 0..5 {
        client.enqueue("q", json!({"payload": format!("task {i}")}));
    }
    let data = server.data_dir();
    let mut server = server;
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()));

    // Damage the second batch (the first enqueue): later batches follow it, so
    // this is corruption, not a torn tail.
    let segment = newest_segment(&data);
    let bytes = std::fs::read(&segment).unwrap();
    let needle = b"task 0";
    let offset = bytes.windows(needle.len()).position(|w| w == needle).expect("the payload is in the log");
    let file = OpenOptions::new().write(true).open(&segment).unwrap();
    file.write_all_at(b"T", offset as u64).unwrap();
    drop(file);

    let (status, _, stderr) = serve_until_exit(&data, &[]);
    assert!(status.is_some_and(|s| !s.success()), "started on a corrupt log ({status:?}); stderr:\n{stderr}");
    let file_name = segment.file_name().unwrap().to_str().unwrap();
    assert!(stderr.contains(file_name) && stderr.contains("offset"), "names file and offset:\n{stderr}");
    assert!(stderr.contains("corrupt"), "{stderr}");
}

#[test]
fn state_after_a_checkpoint_and_more_writes_survives_kill_9() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.create_queue("jobs", json!({"lease_ms": 600_000, "retention_ms": 3_600_000}));
    let mut ids: Vec<String> = (0..20).map(|i| client.enqueue("jobs", json!({"payload": i}))).collect();
    let leased = client.dequeue(&["jobs"], 4);
    // A clean stop takes a last checkpoint into RocksDB and removes the log below it.
    let server = server.stop_and_restart(&[]);
    let recovered_line = server.stderr().lines().rev().find(|l| l.contains("recovered")).unwrap().to_string();
    assert!(!recovered_line.contains("checkpoint_lsn=0"), "the restart used a checkpoint: {recovered_line}");

    // Writes after the checkpoint live only in the log until the next one.
    let mut client = server.client();
    let lease = leased[0]["lease"].as_str().unwrap();
    let done =
        client.post(&format!("/v1/tasks/{}/complete", leased[0]["id"].as_str().unwrap()), json!({"lease": lease}));
    assert_eq!(done.status, 200, "a lease from before the checkpoint is valid after it: {done:?}");
    ids.extend((20..30).map(|i| client.enqueue("jobs", json!({"payload": i}))));
    assert_eq!(client.delete(&format!("/v1/tasks/{}", ids[10])).status, 200);
    client.dequeue(&["jobs"], 3);
    sync_barrier(&mut client);
    let before = state(&mut client, &ids);

    let server = server.crash_and_restart(&[]);
    let mut client = server.client();
    assert_eq!(state(&mut client, &ids), before);
    server.assert_healthy();
}

/// Waits (up to 20 s) until the server's log has a line containing `needle`.
fn wait_for_log(server: &Server, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !server.stderr().contains(needle) {
        assert!(std::time::Instant::now() < deadline, "no log line {needle:?}; stderr:\n{}", server.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn payloads_past_the_memory_limit_are_read_back_from_the_store_also_after_a_crash() {
    // 200 payloads of ~5 KiB (1 MiB) against a 64 KiB budget: 16 times over.
    let args = ["--memory-limit", "64KiB"];
    let server = Server::start(&args);
    let mut client = server.client();
    let payload = |i: usize| format!("{i:04}-{}", "x".repeat(5_000));
    let ids: Vec<String> = (0..200).map(|i| client.enqueue("big", json!({"payload": payload(i)}))).collect();
    wait_for_log(&server, "payloads moved to the store");

    for (i, id) in ids.iter().enumerate().step_by(7) {
        assert_eq!(client.task(id)["payload"], json!(payload(i)), "GET of task {id}");
    }
    let first: Vec<Value> = client.dequeue(&["big"], 100);
    for (i, task) in first.iter().enumerate() {
        assert_eq!(task["payload"], json!(payload(i)), "leased task {i}");
    }

    // After a crash, recovery loads payloads only up to the budget; the rest
    // stay in the store and still come back whole. (The leases' records must be
    // durable before the kill, or those tasks are rightly delivered again.)
    sync_barrier(&mut client);
    let server = server.crash_and_restart(&args);
    let mut client = server.client();
    let rest: Vec<Value> = client.dequeue(&["big"], 1000);
    assert_eq!(rest.len(), 100);
    for (i, task) in rest.iter().enumerate() {
        assert_eq!(task["payload"], json!(payload(100 + i)), "leased task {} after the restart", 100 + i);
    }
    server.assert_healthy();
}

#[test]
fn memory_mode_refuses_enqueues_past_the_memory_limit_until_payloads_are_freed() {
    // No store to move payloads to: the budget is a hard limit on held payloads.
    let server = Server::start(&["--durability", "memory", "--memory-limit", "1KiB"]);
    let mut client = server.client();
    assert_eq!(client.put("/v1/queues/q", json!({"retention_ms": 0})).status, 200);
    let big = json!({"payload": "x".repeat(600)});
    let first = client.enqueue("q", big.clone());

    let refused = client.post("/v1/queues/q/tasks", big.clone());
    refused.assert_error(503, "capacity_exceeded");
    assert!(refused.message().contains("--memory-limit"), "the refusal names the limit: {refused:?}");
    // A small payload still fits, and the server goes on serving.
    client.enqueue("q", json!({"payload": 1}));

    // Completing the first task (retention 0) forgets it and frees its bytes.
    let leased = client.dequeue(&["q"], 1);
    assert_eq!(leased[0]["id"], json!(first));
    let lease = leased[0]["lease"].clone();
    assert_eq!(client.post(&format!("/v1/tasks/{first}/complete"), json!({"lease": lease})).status, 200);
    client.enqueue("q", big);
    server.assert_healthy();
}

// Recovery's damage table (docs/durability.md, "What recovery does with
// damage") on real files against the real binary. Each of these once started
// and served a shorter history without a word.

/// Runs `tqx serve` on `data` until it exits (or 20 s, then kills it):
/// (exit status if it exited, stdout, stderr).
fn serve_until_exit(data: &Path, extra_args: &[&str]) -> (Option<std::process::ExitStatus>, String, String) {
    let mut args = vec!["--http", "127.0.0.1:0", "--binary", "127.0.0.1:0", "--reactors", "1", "--workers", "1"];
    args.push("--no-pin");
    args.extend_from_slice(extra_args);
    support::serve_until_exit(&args, data)
}

/// The refusal of a damaged log: exit 1, with a message naming
/// `file` and each of `needles`.
fn assert_refuses(data: &Path, file: &str, needles: &[&str]) {
    let (status, stdout, stderr) = serve_until_exit(data, &[]);
    assert!(status.is_some_and(|s| s.code() == Some(1)), "started on a damaged log ({status:?}); stderr:\n{stderr}");
    // (It prints `listening` before recovery; /healthz says 503 until then.)
    let _ = stdout;
    assert!(stderr.contains(file), "names {file}:\n{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "says {needle:?}:\n{stderr}");
    }
}

/// A server in a directory of our own with `count` tasks enqueued one by one
/// (a batch each); their ids.
fn server_with_tasks(count: usize) -> (Server, Vec<String>) {
    let server = Server::launch(fresh_dir(), &[]);
    server.wait_healthy();
    let mut client = server.client();
    let ids = (0..count).map(|i| client.enqueue("q", json!({"payload": format!("task {i}")}))).collect();
    (server, ids)
}

fn kill_9(server: &mut Server) {
    server.signal(libc::SIGKILL);
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
}

fn stop(server: &mut Server) {
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()), "{}", server.stderr());
}

fn newest_segment(data: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(data.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    segments.pop().expect("a segment")
}

/// Offsets of the batch headers in a segment (their magic, 8-aligned).
fn batch_offsets(segment: &Path) -> Vec<usize> {
    let bytes = std::fs::read(segment).unwrap();
    (64..bytes.len() - 4).step_by(8).filter(|&at| &bytes[at..at + 4] == b"TQXB").collect()
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_str().unwrap().to_string()
}

#[test]
fn a_wal_segment_cut_short_refuses_to_start_and_accept_data_loss_starts_saying_what_it_dropped() {
    let (mut server, ids) = server_with_tasks(20);
    kill_9(&mut server);
    let data = server.data_dir();
    let segment = newest_segment(&data);
    let batches = batch_offsets(&segment);
    let cut = batches[10];
    let file = OpenOptions::new().write(true).open(&segment).unwrap();
    file.set_len(cut as u64).unwrap();
    drop(file);
    assert_refuses(&data, &file_name(&segment), &[&format!("offset {cut}"), "cut short", "33554432"]);

    let server = Server::launch(server.data_dir().parent().unwrap().to_path_buf(), &["--accept-data-loss"]);
    server.wait_healthy();
    let log = server.stderr();
    assert!(
        log.contains("--accept-data-loss") && log.contains("cut short") && log.contains("kept every record up to LSN"),
        "{log}"
    );
    let mut client = server.client();
    // The seed is batch 1 and each enqueue one batch: the first 9 tasks precede the cut.
    for id in &ids[..9] {
        assert_eq!(client.get(&format!("/v1/tasks/{id}")).status, 200);
    }
    assert_eq!(client.get(&format!("/v1/tasks/{}", ids[9])).status, 404);
    server.assert_healthy();
}

#[test]
fn a_deleted_newest_wal_segment_refuses_to_start_and_accept_data_loss_keeps_the_checkpoint() {
    let (mut server, ids) = server_with_tasks(5);
    stop(&mut server); // a clean stop checkpoints everything into RocksDB
    let data = server.data_dir();
    let segment = newest_segment(&data);
    std::fs::remove_file(&segment).unwrap();
    assert_refuses(&data, &file_name(&segment), &["is missing", "the manifest names it"]);

    let server = Server::launch(data.parent().unwrap().to_path_buf(), &["--accept-data-loss"]);
    server.wait_healthy();
    assert!(server.stderr().contains("the log restarts after the checkpoint"), "{}", server.stderr());
    let mut client = server.client();
    for id in &ids {
        assert_eq!(client.get(&format!("/v1/tasks/{id}")).status, 200, "task {id} from the checkpoint");
    }
    server.assert_healthy();
    // ...and the restarted log recovers after a crash.
    let server = server.crash_and_restart(&[]);
    server.assert_healthy();
}

#[test]
fn zeroed_headers_of_the_last_three_wal_batches_refuse_to_start() {
    let (mut server, _) = server_with_tasks(12);
    kill_9(&mut server);
    let data = server.data_dir();
    let segment = newest_segment(&data);
    let batches = batch_offsets(&segment);
    let file = OpenOptions::new().write(true).open(&segment).unwrap();
    for &at in &batches[batches.len() - 3..] {
        file.write_all_at(&[0u8; 32], at as u64).unwrap();
    }
    drop(file);
    let first = batches[batches.len() - 3];
    assert_refuses(&data, &file_name(&segment), &[&format!("offset {first}"), "a later batch follows"]);
}

#[test]
fn a_torn_final_wal_batch_after_a_crash_is_dropped_and_logged() {
    let (mut server, ids) = server_with_tasks(6);
    kill_9(&mut server);
    let data = server.data_dir();
    let segment = newest_segment(&data);
    let last = *batch_offsets(&segment).last().unwrap();
    // What a crash during that batch's write could leave: part of it missing.
    let file = OpenOptions::new().write(true).open(&segment).unwrap();
    file.write_all_at(&[0u8; 8], last as u64 + 40).unwrap();
    drop(file);
    let server = Server::launch(data.parent().unwrap().to_path_buf(), &[]);
    server.wait_healthy();
    let log = server.stderr();
    assert!(log.contains("incomplete final batch") && log.contains(&file_name(&segment)), "{log}");
    let mut client = server.client();
    for id in &ids[..5] {
        assert_eq!(client.get(&format!("/v1/tasks/{id}")).status, 200);
    }
    assert_eq!(client.get(&format!("/v1/tasks/{}", ids[5])).status, 404);
}

#[test]
fn damage_to_the_last_wal_batch_after_a_clean_stop_refuses_to_start() {
    let (mut server, _) = server_with_tasks(6);
    stop(&mut server);
    let data = server.data_dir();
    let segment = newest_segment(&data);
    let last = *batch_offsets(&segment).last().unwrap();
    let file = OpenOptions::new().write(true).open(&segment).unwrap();
    file.write_all_at(&[0u8; 8], last as u64 + 40).unwrap();
    drop(file);
    assert_refuses(&data, &file_name(&segment), &[&format!("offset {last}"), "closed cleanly"]);
}

#[test]
fn a_failing_checkpoint_stops_the_server_and_a_restart_recovers_every_acknowledged_task() {
    // Every checkpoint write fails; it was retried forever while the log grew.
    let args = ["--checkpoint-interval-ms", "1000", "--debug-fail-checkpoint-writes-after", "0"];
    let mut server = Server::launch(fresh_dir(), &args);
    server.wait_healthy();
    let mut acknowledged = Vec::new();
    let mut client = server.client();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server.is_running() {
        assert!(std::time::Instant::now() < deadline, "the server kept running: {}", server.stderr());
        if client.send_raw_lossy(&request_bytes("POST", "/v1/queues/q/tasks", Some(br#"{"payload":"p"}"#))).is_err() {
            break;
        }
        match client.read_response() {
            Ok(response) if response.status == 201 => {
                acknowledged.push(response.body["id"].as_str().unwrap().to_string())
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => break,
        }
    }
    assert!(!acknowledged.is_empty(), "the server stopped before acknowledging anything");
    let status = server.wait_exit(Duration::from_secs(20));
    let log = server.stderr();
    assert!(status.is_some_and(|s| s.code() == Some(1)), "exit {status:?}:\n{log}");
    assert!(log.contains("stopped because a checkpoint into RocksDB failed") && log.contains("injected"), "{log}");

    let server = Server::launch(server.data_dir().parent().unwrap().to_path_buf(), &[]);
    server.wait_healthy();
    let mut client = server.client();
    for id in &acknowledged {
        assert_eq!(client.get(&format!("/v1/tasks/{id}")).status, 200, "acknowledged task {id}");
    }
    server.assert_healthy();
}

/// A data directory of the previous log format (version 1: records in their
/// own codec, before a command was its binary request body) is refused at
/// start, with or without `--accept-data-loss`, saying which version it found,
/// which this server writes and what the operator can do; its files are left
/// as they were.
#[test]
fn a_data_directory_of_the_previous_log_format_is_refused_with_what_to_do() {
    let (mut server, _) = server_with_tasks(3);
    stop(&mut server);
    let data = server.data_dir();
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(data.join("wal")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    files.sort();
    assert!(files.iter().any(|p| file_name(p) == "MANIFEST"), "{files:?}");
    // What version 1 wrote: the same 64-byte headers with version byte 1.
    for file in &files {
        let mut bytes = std::fs::read(file).unwrap();
        assert_eq!(bytes[7], 2, "{}: this server writes version 2", file.display());
        bytes[7] = 1;
        let crc = crc32c::crc32c(&bytes[0..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(file, bytes).unwrap();
    }
    let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let needles = ["log format version 1", "writes version 2", "release that wrote it", "move the data directory away"];
    assert_refuses(&data, "MANIFEST", &needles);
    let (status, _, stderr) = serve_until_exit(&data, &["--accept-data-loss"]);
    assert!(status.is_some_and(|s| s.code() == Some(1)), "started on an old log ({status:?}); stderr:\n{stderr}");
    assert!(stderr.contains("log format version 1"), "{stderr}");
    let after: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(before == after, "the old log was changed");
}

/// Checkpoint increments are taken while producers keep enqueueing, and with a
/// day-long interval they are written to RocksDB without a flush (the engine
/// lock is held only to copy each increment's rows; src/server/checkpoint.rs).
/// A `kill -9` then loses nothing: the log below the last flush was never
/// removed, and the restart rebuilds every acknowledged task from it. A clean
/// stop flushes, and the next restart starts from that checkpoint.
#[test]
fn checkpoint_increments_taken_while_enqueues_continue_lose_nothing_across_kill_9_and_a_clean_stop() {
    const PRODUCERS: usize = 2;
    const BATCHES_PER_PRODUCER: usize = 14;
    const TASKS_PER_BATCH: usize = 10_000;
    // More than two increments' worth (`CHECKPOINT_ROWS_NUDGE` = 131,072 rows),
    // fewer than a flush's (`FLUSH_TASK_ROWS_MAX` = 1,000,000 task rows).
    const TASKS: usize = PRODUCERS * BATCHES_PER_PRODUCER * TASKS_PER_BATCH;
    let args = ["--checkpoint-interval-ms", "86400000", "--log-level", "info,taskqueuex::server::checkpoint=debug"];
    let server = Server::start(&args);
    let enqueue_batches = |server: &Server, producer: usize, batches: usize| {
        let mut client = server.client();
        for batch in 0..batches {
            let tasks: Vec<Value> =
                (0..TASKS_PER_BATCH).map(|i| json!({"payload": format!("{producer}-{batch}-{i}")})).collect();
            let response = client.post("/v1/queues/bulk/tasks/batch", json!({"tasks": tasks}));
            assert_eq!(response.status, 201, "batch {batch} of producer {producer}: {}", response.raw_text());
        }
    };
    std::thread::scope(|scope| {
        for producer in 0..PRODUCERS {
            let server = &server;
            scope.spawn(move || enqueue_batches(server, producer, BATCHES_PER_PRODUCER));
        }
    });
    let mut client = server.client();
    // An increment is taken after the batch that nudges it: wait for one. (Not
    // for two: a checkpointer slow to wake on a loaded machine takes most of
    // the rows at once, and what is left stays below the early start.)
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !server.stderr().contains("checkpoint increment") {
        assert!(std::time::Instant::now() < deadline, "no checkpoint increments:\n{}", server.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!server.stderr().contains("checkpoint flush"), "flushed before the interval:\n{}", server.stderr());
    assert_eq!(client.queue_counts("bulk")["ready"], json!(TASKS));

    let server = server.crash_and_restart(&args);
    let mut client = server.client();
    assert_eq!(client.queue_counts("bulk")["ready"], json!(TASKS), "after kill -9");
    enqueue_batches(&server, PRODUCERS, 1);

    let server = server.stop_and_restart(&args);
    let recovered_line = server.stderr().lines().rev().find(|l| l.contains("recovered")).unwrap().to_string();
    assert!(!recovered_line.contains("checkpoint_lsn=0"), "the restart used a checkpoint: {recovered_line}");
    let mut client = server.client();
    assert_eq!(client.queue_counts("bulk")["ready"], json!(TASKS + TASKS_PER_BATCH), "after a clean stop");
    server.assert_healthy();
}
