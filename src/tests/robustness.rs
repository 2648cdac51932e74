//! Issue 15 (hardening), against the real `tqx serve`: lease tokens that cannot
//! be forged (item 7), a server that says it is not ready when one of its threads
//! is stuck (item 2), and cold payloads read without the engine lock (item 9).

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};

use serde_json::{json, Value};
use support::{Client, Server, SyncGate};
use tqx_wire::{peek_frame, Request, Response, HEADER_BYTES};

// ---- item 7: lease tokens ---------------------------------------------------

/// The lease token scheme of b58fe3b (`src/engine/jitter.rs` there), kept here
/// to mount the attack the issue describes: `mix64` is a bijection, so one
/// token with its task id and attempt gives the seed, and the seed every token.
mod old_scheme {
    const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
    const M1: u64 = 0xbf58_476d_1ce4_e5b9;
    const M2: u64 = 0x94d0_49bb_1331_11eb;

    fn mix64(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(M1);
        z = (z ^ (z >> 27)).wrapping_mul(M2);
        z ^ (z >> 31)
    }

    /// The inverse of `z ^ (z >> shift)`.
    fn unxorshift(z: u64, shift: u32) -> u64 {
        let mut x = z;
        for _ in 0..(64 / shift) {
            x = z ^ (x >> shift);
        }
        x
    }

    /// The inverse of an odd multiplier modulo 2^64 (Newton's iteration).
    fn inverse(m: u64) -> u64 {
        let mut x = m;
        for _ in 0..6 {
            x = x.wrapping_mul(2u64.wrapping_sub(m.wrapping_mul(x)));
        }
        x
    }

    fn unmix64(z: u64) -> u64 {
        let z = unxorshift(z, 31).wrapping_mul(inverse(M2));
        let z = unxorshift(z, 27).wrapping_mul(inverse(M1));
        unxorshift(z, 30)
    }

    pub fn token(seed: u64, id: u64, attempt: u32) -> u64 {
        mix64(seed ^ id.wrapping_mul(GOLDEN_GAMMA) ^ u64::from(attempt))
    }

    /// The seed behind `token`, were it made by [`token`].
    pub fn seed_from(token: u64, id: u64, attempt: u32) -> u64 {
        unmix64(token) ^ id.wrapping_mul(GOLDEN_GAMMA) ^ u64::from(attempt)
    }

    #[test]
    fn the_old_scheme_is_inverted_exactly() {
        for (seed, id, attempt) in [(0u64, 1u64, 1u32), (0x1234_5678_9abc_def0, 77, 3), (u64::MAX, u64::MAX >> 1, 1000)]
        {
            assert_eq!(seed_from(token(seed, id, attempt), id, attempt), seed);
        }
    }
}

fn id_of(task: &Value) -> u64 {
    task["id"].as_str().and_then(|id| id.parse().ok()).unwrap_or_else(|| panic!("a task id: {task}"))
}

fn lease_of(task: &Value) -> u64 {
    task["lease"].as_str().and_then(|lease| lease.parse().ok()).unwrap_or_else(|| panic!("a lease token: {task}"))
}

fn complete(client: &mut Client, id: u64, lease: u64) -> support::Response {
    client.post(&format!("/v1/tasks/{id}/complete"), json!({"lease": lease.to_string()}))
}

fn fail_for_good(client: &mut Client, id: u64, lease: u64) -> support::Response {
    client.post(&format!("/v1/tasks/{id}/fail"), json!({"lease": lease.to_string(), "error": "forged", "retry": false}))
}

/// The exploit: from one legitimate lease (token, id, attempt) a client
/// recovered the seed and completed or dead-lettered other clients' tasks.
#[test]
fn a_lease_token_cannot_be_forged_from_another_lease() {
    let server = Server::start(&[]);
    let mut attacker = server.client();
    let mut victim = server.client();
    for i in 0..2 {
        attacker.enqueue("jobs", json!({"payload": {"n": i}}));
    }
    let mine = attacker.dequeue(&["jobs"], 1).remove(0);
    let theirs = victim.dequeue(&["jobs"], 1).remove(0);
    let (their_id, their_lease) = (id_of(&theirs), lease_of(&theirs));

    let seed = old_scheme::seed_from(lease_of(&mine), id_of(&mine), 1);
    let forged = old_scheme::token(seed, their_id, 1);
    assert_ne!(forged, their_lease, "the old scheme's token must not be the real one");
    complete(&mut attacker, their_id, forged).assert_error(409, "lease_mismatch");
    fail_for_good(&mut attacker, their_id, forged).assert_error(409, "lease_mismatch");
    assert_eq!(attacker.task(&their_id.to_string())["state"], "leased");
    // The holder still completes with the real token.
    let done = complete(&mut victim, their_id, their_lease);
    assert_eq!(done.status, 200, "{done:?}");
}

/// Tokens are a function of a key kept in the data directory, so leases handed
/// out before a restart stay valid after it: restored from the checkpoint (a
/// clean stop takes one) and replayed from the log (after kill -9).
#[test]
fn lease_tokens_survive_restarts_and_the_key_file_is_private() {
    let server = Server::start(&[]);
    let mut client = server.client();
    for i in 0..2 {
        client.enqueue("jobs", json!({"payload": {"n": i}}));
    }
    let first = client.dequeue(&["jobs"], 1).remove(0);
    let key_file = server.data_dir().join("lease.key");
    let mode = std::fs::metadata(&key_file).expect("DATA/lease.key exists").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "lease.key mode {mode:o}");

    let server = server.stop_and_restart(&[]);
    let mut client = server.client();
    let done = complete(&mut client, id_of(&first), lease_of(&first));
    assert_eq!(done.status, 200, "after a clean restart: {done:?}");

    let second = client.dequeue(&["jobs"], 1).remove(0);
    // An enqueue's reply waits for its record's sync, which covers the lease's.
    client.enqueue("other", json!({"payload": 1}));
    let server = server.crash_and_restart(&[]);
    let mut client = server.client();
    let done = complete(&mut client, id_of(&second), lease_of(&second));
    assert_eq!(done.status, 200, "after kill -9 and replay: {done:?}");
}

/// A data directory with state but no usable key is refused at start (a new key
/// would silently invalidate every lease), naming the file and the way out;
/// `--regenerate-lease-key` makes a new one, under which old tokens are refused.
#[test]
fn a_missing_or_damaged_lease_key_is_refused_at_start() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.enqueue("jobs", json!({"payload": 1}));
    let task = client.dequeue(&["jobs"], 1).remove(0);
    client.enqueue("other", json!({"payload": 2})); // syncs the lease's record
    let mut server = server;
    server.signal(libc::SIGKILL);
    server.wait_exit(Duration::from_secs(10)).expect("killed");
    let dir = server.data_dir().parent().unwrap().to_path_buf();
    let key_file = server.data_dir().join("lease.key");
    let original = std::fs::read(&key_file).unwrap();

    for (what, damage) in
        [("short", Some(original[..10].to_vec())), ("corrupt", Some(flip(&original, 12))), ("missing", None)]
    {
        match damage {
            Some(bytes) => std::fs::write(&key_file, bytes).unwrap(),
            None => std::fs::remove_file(&key_file).unwrap(),
        }
        let mut refused = Server::launch(dir.clone(), &[]);
        let status = refused.wait_exit(Duration::from_secs(10));
        assert!(status.is_some_and(|s| !s.success()), "{what} key: the server must refuse to start: {status:?}");
        let stderr = refused.stderr();
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.contains("lease.key") && last.contains("--regenerate-lease-key"), "{what} key: {last}");
        std::mem::forget(refused); // its directory is still in use below
    }

    let server = Server::launch(dir, &["--regenerate-lease-key"]);
    server.wait_healthy();
    let mut client = server.client();
    complete(&mut client, id_of(&task), lease_of(&task)).assert_error(409, "lease_mismatch");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    bytes[at] ^= 1;
    bytes
}

// ---- item 2: readiness reports a stuck thread -------------------------------

/// A binary ping's `ready`, on a fresh connection (hello, then ping).
fn binary_ready(addr: SocketAddr) -> bool {
    let mut stream = TcpStream::connect(addr).expect("connect (binary)");
    stream.set_read_timeout(Some(support::READ_TIMEOUT)).unwrap();
    let mut frames = Vec::new();
    Request::Hello { version_min: 1, version_max: 1 }.encode(1, &mut frames);
    Request::Ping.encode(2, &mut frames);
    stream.write_all(&frames).unwrap();
    let mut buffer = Vec::new();
    let mut replies = Vec::new();
    while replies.len() < 2 {
        if let Some(header) = peek_frame(&buffer, usize::MAX).expect("the server's framing") {
            let end = HEADER_BYTES + header.body_len.get() as usize;
            let body = bytes::Bytes::copy_from_slice(&buffer[HEADER_BYTES..end]);
            replies.push(Response::decode(&header, body).expect("a reply"));
            buffer.drain(..end);
            continue;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).expect("a reply to ping");
        assert!(n > 0, "the server closed the connection");
        buffer.extend_from_slice(&chunk[..n]);
    }
    match &replies[1] {
        Response::Pong { ready } => *ready,
        other => panic!("ping: {other:?}"),
    }
}

/// The issue: a server whose log writer (or worker, or reactor) is stuck still
/// accepted connections and said `200 ok` on `/healthz`. Here the WAL thread is
/// held in its `fdatasync` (the test FIFO gate) while an enqueue waits for it:
/// past `--stall-timeout-ms`, `/healthz` says 503 `stalled` and ping `ready:
/// false`; once the sync goes through, both say ready again.
#[test]
fn a_stuck_log_writer_makes_healthz_and_ping_not_ready_until_it_progresses() {
    let dir = support::fresh_dir();
    let mut gate = SyncGate::new(&dir);
    gate.release(1); // the new log's first record (the engine seed)
    let server =
        Server::launch_binary(dir, "127.0.0.1:0", &["--debug-wal-sync-gate", &gate.arg(), "--stall-timeout-ms", "300"]);
    server.wait_healthy();
    let binary = server.binary_addr.expect("binary address");
    assert!(binary_ready(binary), "ready before anything is held");

    let mut held = server.client();
    held.send_raw(&support::json_request("POST", "/v1/queues/jobs/tasks", &json!({"payload": 1})));
    let mut health = server.client();
    wait_until("/healthz to say stalled", Duration::from_secs(10), || {
        let response = health.get("/healthz");
        response.status == 503 && response.body == json!({"status": "stalled"})
    });
    assert!(!binary_ready(binary), "ping must say not ready while the log writer is stuck");
    assert!(server.stderr().contains("write-ahead log thread"), "the stall is logged:\n{}", server.stderr());

    gate.release(1 << 10);
    let response = held.read_response().expect("the held enqueue is answered");
    assert_eq!(response.status, 201, "{response:?}");
    wait_until("/healthz to say ok again", Duration::from_secs(10), || health.get("/healthz").status == 200);
    assert!(binary_ready(binary));
}

/// The issue: a panic on a worker thread (there, the WAL encoder's) left a
/// process that accepted connections and answered nothing. Now the panic is
/// logged, naming the thread, and the process aborts (`panic = "abort"` and the
/// panic hook), so a supervisor restarts it and recovery runs. The command is
/// executed by the reactor that read it, or by the timer thread if that held
/// the engine lock at that moment (combining, `server/worker.rs`).
#[test]
fn a_panic_on_an_executing_thread_ends_the_process_loudly() {
    use std::os::unix::process::ExitStatusExt as _;
    let mut server = Server::start(&["--debug-panic-on-queue", "boom"]);
    let mut client = server.client();
    client.enqueue("fine", json!({"payload": 1}));
    client.send_raw(&support::json_request("POST", "/v1/queues/boom/tasks", &json!({"payload": 2})));
    let status = server.wait_exit(Duration::from_secs(10));
    let stderr = server.stderr();
    assert!(status.is_some(), "the server must not outlive a panic on a worker; stderr:\n{stderr}");
    assert_eq!(status.and_then(|s| s.signal()), Some(libc::SIGABRT), "{status:?}");
    assert!(
        (stderr.contains("tqx-reactor-0") || stderr.contains("tqx-worker-0")) && stderr.contains("deliberate panic"),
        "stderr:\n{stderr}"
    );
    // Recovery runs on the restart, with what was acknowledged.
    let server = server.crash_and_restart(&[]);
    assert_eq!(server.client().queue_counts("fine")["ready"], 1);
}

// ---- item 9: cold payloads are read off the engine lock ----------------------

/// The issue: a cold task's payload was read from RocksDB under the engine lock,
/// so one slow disk read stalled every client. Here the read is held open (the
/// test FIFO gate) while another client enqueues and reads; then it completes
/// with the right payload.
#[test]
fn a_held_cold_payload_read_does_not_stall_other_clients() {
    let dir = support::fresh_dir();
    let mut gate = SyncGate::new(&dir.join("cold-read"));
    let server = Server::launch(
        dir,
        &["--memory-limit", "4KiB", "--checkpoint-interval-ms", "50", "--debug-cold-read-gate", &gate.arg()],
    );
    server.wait_healthy();
    let mut client = server.client();
    let filler = "x".repeat(2000);
    // One batch (all or nothing under the engine lock), so the checkpoint that
    // sees them over the 4 KiB budget moves all but the oldest to the store.
    let tasks: Vec<Value> = (0..6).map(|i| json!({"payload": format!("{i}{filler}")})).collect();
    let response = client.post("/v1/queues/cold/tasks/batch", json!({ "tasks": tasks }));
    assert_eq!(response.status, 201, "{response:?}");
    let ids: Vec<String> = serde_json::from_value(response.body["ids"].clone()).expect("ids");
    wait_until("five payloads to move to the store", Duration::from_secs(10), || {
        let stderr = server.stderr();
        let moved = stderr.lines().filter(|line| line.contains("payloads moved to the store"));
        let count =
            |line: &str| line.split("count=").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok();
        moved.filter_map(count).sum::<u64>() >= 5
    });

    let mut reader = server.client();
    reader.send_raw(&support::request_bytes("GET", &format!("/v1/tasks/{}", ids[5]), None));
    let mut other = server.client();
    other.set_read_timeout(Duration::from_secs(5));
    assert_eq!(other.get("/v1/queues/cold").status, 200, "a read while the cold read is held");
    other.enqueue("warm", json!({"payload": "while the cold read is held"}));
    // The cold read really is held: its reply has not come.
    reader.set_read_timeout(Duration::from_millis(300));
    assert!(reader.read_response().is_err(), "the cold read was not held by the gate");

    gate.release(1);
    reader.set_read_timeout(support::READ_TIMEOUT);
    let response = reader.read_response().expect("the cold read is answered once released");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body["payload"], json!(format!("5{filler}")));
    gate.release(1 << 10);
    server.assert_healthy();
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
