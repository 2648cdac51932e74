//! `tqx-client` against the real server (`tqx serve --binary`): every
//! operation, async and blocking; 10,000 requests pipelined on one connection;
//! reconnecting after a restart on the same port; a keyed enqueue in flight
//! during `kill -9` that is not duplicated; a differential test (one seeded
//! random sequence through HTTP against one server and through the binary
//! client against another, then the final states compared through the HTTP
//! API); and the CLI's `--binary` printing what it prints over HTTP.
//!
//! The client's exact reconnect and resend rules are tested against a scripted
//! server in `wire/client/tests/mock_server.rs`; here they meet the real one.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use support::{Server, SyncGate};
use tqx_client::{
    ClientError, ClientOptions, CompleteItem, Dep, Discipline, ErrorCode, QueuePatch, TaskSpec, TaskState,
};

const MEMORY: &[&str] = &["--durability", "memory"];

fn binary_addr(server: &Server) -> String {
    server.binary_addr.expect("started with --binary").to_string()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Options for a server that is restarted under the client: keep trying for
/// about 10 s, in short steps.
fn patient_options() -> ClientOptions {
    ClientOptions {
        reconnect_backoff_base_ms: 10,
        reconnect_backoff_max_ms: 200,
        reconnect_attempts_max: 100,
        request_timeout_ms: 10_000,
        ..ClientOptions::default()
    }
}

fn task(payload: &'static str) -> TaskSpec {
    TaskSpec { payload: Bytes::from_static(payload.as_bytes()), ..TaskSpec::default() }
}

#[track_caller]
fn assert_code<T: std::fmt::Debug>(result: Result<T, ClientError>, code: ErrorCode) {
    match result {
        Err(ClientError::Server { code: got, message }) => {
            assert_eq!(got, code, "{message}");
            assert!(!message.is_empty());
        }
        other => panic!("expected the server error {code}, got {other:?}"),
    }
}

// ---- every operation ---------------------------------------------------------------

#[test]
fn every_operation_through_the_async_client() {
    let server = Server::start_binary("127.0.0.1:0", MEMORY);
    let addr = binary_addr(&server);
    runtime().block_on(async {
        let client = tqx_client::Client::connect(&addr, ClientOptions::default()).await.unwrap();
        assert!(client.ping().await.unwrap());

        // configure_queue, get_queue, list_queues
        let patch = QueuePatch {
            discipline: Some(Discipline::Priority),
            lease_ms: Some(60_000),
            max_attempts: Some(2),
            backoff_ms: Some(0),
            group_concurrency: Some(Some(4)),
            ..QueuePatch::default()
        };
        let info = client.configure_queue("jobs", &patch).await.unwrap();
        assert_eq!(
            (info.name.as_str(), info.discipline, info.lease_ms, info.max_attempts),
            ("jobs", Discipline::Priority, 60_000, 2)
        );
        assert_eq!(info.group_concurrency, Some(4));
        assert_eq!(client.get_queue("jobs").await.unwrap(), info);
        assert_code(client.get_queue("nope").await, ErrorCode::QueueNotFound);
        let unlimit = QueuePatch { group_concurrency: Some(None), ..QueuePatch::default() };
        assert_eq!(client.configure_queue("jobs", &unlimit).await.unwrap().group_concurrency, None);
        assert_code(client.configure_queue("bad name!", &QueuePatch::default()).await, ErrorCode::InvalidArgument);

        // enqueue: priorities, a key, a group, a delay, a dependency
        let low = client.enqueue("jobs", task(r#"{"n":1}"#)).await.unwrap();
        let keyed =
            TaskSpec { priority: 9, key: Some("order-17".into()), group: Some("g".into()), ..task(r#"{"n":2}"#) };
        let high = client.enqueue("jobs", keyed.clone()).await.unwrap();
        assert!(high.created && high.state == TaskState::Ready);
        let again = client.enqueue("jobs", keyed).await.unwrap();
        assert_eq!((again.id, again.created), (high.id, false), "the key returns the original");
        let delayed = client.enqueue("jobs", TaskSpec { delay_ms: 600_000, ..task("3") }).await.unwrap();
        assert_eq!(delayed.state, TaskState::Delayed);
        let dependent =
            client.enqueue("later", TaskSpec { depends_on: vec![Dep::Task(low.id)], ..task("4") }).await.unwrap();
        assert_eq!(dependent.state, TaskState::Waiting);
        assert_code(
            client.enqueue("jobs", TaskSpec { depends_on: vec![Dep::Task(999)], ..task("5") }).await,
            ErrorCode::InvalidArgument,
        );
        // Bytes that are not JSON are fine over the binary protocol.
        let raw = client
            .enqueue("raw", TaskSpec { payload: Bytes::from_static(b"\x00\xff"), ..TaskSpec::default() })
            .await
            .unwrap();
        assert_eq!(client.get_task(raw.id).await.unwrap().payload, Bytes::from_static(b"\x00\xff"));

        // enqueue_batch with a dependency inside the batch
        let batch = client
            .enqueue_batch(
                "batch",
                vec![task("\"fetch\""), TaskSpec { depends_on: vec![Dep::Batch(0)], ..task("\"render\"") }],
            )
            .await
            .unwrap();
        assert_eq!(batch.iter().map(|e| e.state).collect::<Vec<_>>(), [TaskState::Ready, TaskState::Waiting]);
        assert_eq!(batch[1].id, batch[0].id + 1);
        assert_code(
            client.enqueue_batch("batch", vec![TaskSpec { depends_on: vec![Dep::Batch(3)], ..task("1") }]).await,
            ErrorCode::InvalidArgument,
        );

        // dequeue: priority order, one per call here
        let leased = client.dequeue(&["jobs"], 1, None, 0).await.unwrap();
        assert_eq!(leased.len(), 1);
        let first = &leased[0];
        assert_eq!((first.id, first.priority, first.attempt, first.group.as_deref()), (high.id, 9, 1, Some("g")));
        assert_eq!(first.payload, Bytes::from_static(br#"{"n":2}"#));
        // A queue that does not exist is refused, naming it.
        match client.dequeue(&["nothing", "jobs"], 10, Some(5_000), 0).await {
            Err(ClientError::Server { code: ErrorCode::QueueNotFound, message }) => {
                assert!(message.contains("nothing"))
            }
            other => panic!("dequeue of a queue that does not exist: {other:?}"),
        }
        let second = client.dequeue(&["jobs"], 10, Some(5_000), 0).await.unwrap();
        assert_eq!(second.iter().map(|t| t.id).collect::<Vec<_>>(), [low.id], "the delayed task is not ready");
        assert!(client.dequeue(&["jobs"], 1, None, 0).await.unwrap().is_empty());

        // get_task
        let view = client.get_task(high.id).await.unwrap();
        assert_eq!(
            (view.state, view.attempts, view.key.as_deref(), view.queue.as_str()),
            (TaskState::Leased, 1, Some("order-17"), "jobs")
        );
        assert!(view.lease_expires_at_ms.is_some());
        assert_code(client.get_task(12_345).await, ErrorCode::TaskNotFound);

        // extend, complete (wrong lease first), fail with and without retry
        assert_code(client.extend(first.id, first.lease ^ 1, 10_000).await, ErrorCode::LeaseMismatch);
        let expires = client.extend(first.id, first.lease, 120_000).await.unwrap();
        assert!(expires > first.lease_expires_at_ms);
        assert_code(client.complete(first.id, first.lease ^ 1, None).await, ErrorCode::LeaseMismatch);
        let done = client.complete(first.id, first.lease, Some(Bytes::from_static(b"{\"sent\":true}"))).await.unwrap();
        assert_eq!(done, TaskState::Completed);
        assert_eq!(client.get_task(first.id).await.unwrap().result, Some(Bytes::from_static(b"{\"sent\":true}")));
        assert_code(client.complete(first.id, first.lease, None).await, ErrorCode::NotLeased);

        let low_leased = &second[0];
        // Backoff 0: a retried task is ready at once.
        assert_eq!(client.fail(low_leased.id, low_leased.lease, "smtp timeout", true).await.unwrap(), TaskState::Ready);
        let retry = client.dequeue(&["jobs"], 1, None, 0).await.unwrap().remove(0);
        assert_eq!((retry.id, retry.attempt), (low.id, 2));
        assert_eq!(client.fail(retry.id, retry.lease, "gave up", false).await.unwrap(), TaskState::Dead);
        let dead = client.get_task(low.id).await.unwrap();
        assert_eq!((dead.state, dead.error.as_deref()), (TaskState::Dead, Some("gave up")));
        // Its dependent can never run: cancelled with it.
        assert_eq!(client.get_task(dependent.id).await.unwrap().state, TaskState::Cancelled);

        // cancel
        assert_eq!(client.cancel(delayed.id).await.unwrap(), TaskState::Cancelled);
        assert_code(client.cancel(delayed.id).await, ErrorCode::TaskFinished);

        // complete_batch: each item on its own
        let fetch = client.dequeue(&["batch"], 5, None, 0).await.unwrap();
        assert_eq!(fetch.len(), 1);
        let outcomes = client
            .complete_batch(vec![
                CompleteItem { id: fetch[0].id, lease: fetch[0].lease, result: Some(Bytes::from_static(b"1")) },
                CompleteItem { id: 999, lease: 1, result: None },
            ])
            .await
            .unwrap();
        assert_eq!(outcomes, [(fetch[0].id, Ok(TaskState::Completed)), (999, Err(ErrorCode::TaskNotFound))]);
        assert_eq!(client.get_task(batch[1].id).await.unwrap().state, TaskState::Ready, "released by its dependency");

        // dequeue with wait (on a queue that exists): a task enqueued meanwhile wakes it
        client.configure_queue("wake", &QueuePatch::default()).await.unwrap();
        let waiter = {
            let client = client.clone();
            tokio::spawn(async move { client.dequeue(&["wake"], 1, None, 10_000).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let woken = client.enqueue("wake", task("\"up\"")).await.unwrap();
        assert_eq!(waiter.await.unwrap().unwrap()[0].id, woken.id);

        // delete_queue
        assert_code(client.delete_queue("batch", false).await, ErrorCode::QueueNotEmpty);
        client.delete_queue("batch", true).await.unwrap();
        assert_code(client.get_queue("batch").await, ErrorCode::QueueNotFound);
        let names: Vec<String> = client.list_queues().await.unwrap().into_iter().map(|q| q.name).collect();
        assert_eq!(names, ["jobs", "later", "raw", "wake"], "in name order");
        let jobs = client.get_queue("jobs").await.unwrap();
        // counts: waiting, delayed, ready, leased, completed, dead, cancelled
        assert_eq!(jobs.counts, [0, 0, 0, 0, 1, 1, 1]);

        // values no frame can carry are refused before sending
        let empty_key = TaskSpec { key: Some(String::new()), ..task("1") };
        assert!(matches!(client.enqueue("jobs", empty_key).await, Err(ClientError::InvalidRequest { .. })));
    });
    server.assert_healthy();
}

#[test]
fn every_operation_through_the_blocking_client() {
    let server = Server::start_binary("127.0.0.1:0", MEMORY);
    let client = tqx_client::blocking::Client::connect(&binary_addr(&server), ClientOptions::default()).unwrap();
    assert!(client.ping().unwrap());
    let patch = QueuePatch { backoff_ms: Some(0), ..QueuePatch::default() };
    assert_eq!(client.configure_queue("q", &patch).unwrap().backoff_ms, 0);
    let a = client.enqueue("q", task("1")).unwrap();
    let b = client.enqueue_batch("q", vec![task("2"), task("3")]).unwrap();
    let leased = client.dequeue(&["q"], 3, Some(60_000), 0).unwrap();
    assert_eq!(leased.iter().map(|t| t.id).collect::<Vec<_>>(), [a.id, b[0].id, b[1].id]);
    assert!(client.extend(leased[0].id, leased[0].lease, 1_000).unwrap() > 0);
    assert_eq!(client.complete(leased[0].id, leased[0].lease, None).unwrap(), TaskState::Completed);
    assert_eq!(client.fail(leased[1].id, leased[1].lease, "x", false).unwrap(), TaskState::Dead);
    let outcomes =
        client.complete_batch(vec![CompleteItem { id: leased[2].id, lease: leased[2].lease, result: None }]).unwrap();
    assert_eq!(outcomes, [(leased[2].id, Ok(TaskState::Completed))]);
    let c = client.enqueue("q", task("4")).unwrap();
    assert_eq!(client.cancel(c.id).unwrap(), TaskState::Cancelled);
    assert_eq!(client.get_task(a.id).unwrap().state, TaskState::Completed);
    assert_eq!(client.get_queue("q").unwrap().counts, [0, 0, 0, 0, 2, 1, 1]);
    assert_eq!(client.list_queues().unwrap().len(), 1);
    assert_code(client.delete_queue("none", false), ErrorCode::QueueNotFound);
    client.delete_queue("q", false).unwrap();
    assert!(client.list_queues().unwrap().is_empty());
}

// ---- pipelining ------------------------------------------------------------------

#[test]
fn ten_thousand_pipelined_requests_on_one_connection_are_all_answered_and_matched() {
    const REQUESTS: usize = 10_000;
    let server = Server::start_binary("127.0.0.1:0", MEMORY);
    let addr = binary_addr(&server);
    runtime().block_on(async {
        let client = tqx_client::Client::connect(&addr, ClientOptions::default()).await.unwrap();
        // All 10,000 enqueues are started before any is awaited: they share one
        // connection, many in flight at once.
        let calls: Vec<_> = (0..REQUESTS)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    let payload = Bytes::from(format!("{{\"i\":{i}}}"));
                    (i, client.enqueue("pipelined", TaskSpec { payload, ..TaskSpec::default() }).await)
                })
            })
            .collect();
        let mut id_of = vec![0u64; REQUESTS];
        for call in calls {
            let (i, result) = call.await.unwrap();
            id_of[i] = result.unwrap_or_else(|e| panic!("enqueue {i}: {e}")).id;
        }
        let mut ids = id_of.clone();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), REQUESTS, "10,000 distinct tasks");

        // And 10,000 pipelined reads, each of which must come back with the task
        // its own request named (the payload written for it).
        let reads: Vec<_> = id_of
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                let client = client.clone();
                tokio::spawn(async move { (i, client.get_task(id).await) })
            })
            .collect();
        for read in reads {
            let (i, view) = read.await.unwrap();
            let view = view.unwrap();
            assert_eq!(view.payload, Bytes::from(format!("{{\"i\":{i}}}")), "task {}", view.id);
        }
        assert_eq!(client.get_queue("pipelined").await.unwrap().counts[TaskState::Ready as usize], REQUESTS as u64);
    });
}

// ---- reconnecting ------------------------------------------------------------------

#[test]
fn a_call_after_a_server_restart_reconnects_on_the_same_port() {
    // Default durability (sync), so the restart keeps the tasks.
    let server = Server::start_binary("127.0.0.1:0", &[]);
    let addr = binary_addr(&server);
    let client = tqx_client::blocking::Client::connect(&addr, patient_options()).unwrap();
    let before = client.enqueue("q", task("\"before\"")).unwrap();

    let server = server.stop_and_restart_binary(&[]);
    assert_eq!(binary_addr(&server), addr, "same port");

    // An enqueue without a key is not safe to resend; it succeeds because the
    // client saw the old connection close and opens a new one before sending.
    let after = client.enqueue("q", task("\"after\"")).unwrap();
    assert!(after.created && after.id > before.id);
    assert_eq!(client.get_task(before.id).unwrap().payload, Bytes::from_static(b"\"before\""));
    assert_eq!(client.get_queue("q").unwrap().counts[TaskState::Ready as usize], 2);

    // Again, with SIGKILL.
    let server = server.crash_and_restart_binary(&[]);
    assert_eq!(binary_addr(&server), addr);
    assert_eq!(client.list_queues().unwrap()[0].counts[TaskState::Ready as usize], 2);
}

#[test]
fn a_keyed_enqueue_in_flight_during_kill_9_is_resent_and_not_duplicated() {
    // Hold every WAL sync, so the enqueues below are executed and written but
    // their replies (which wait for the sync) never leave: they are in flight
    // when the server is killed.
    let dir = support::fresh_dir();
    let mut gate = SyncGate::new(&dir);
    gate.release(1); // the new log's first record (the engine seed)
    let server = Server::launch_binary(dir, "127.0.0.1:0", &["--debug-wal-sync-gate", &gate.arg()]);
    server.wait_healthy();
    let addr = binary_addr(&server);
    let mut http = server.client();

    runtime().block_on(async {
        let client = tqx_client::Client::connect(&addr, patient_options()).await.unwrap();
        let keyed = {
            let client = client.clone();
            tokio::spawn(async move {
                let spec = TaskSpec { key: Some("payment-42".into()), ..task(r#"{"amount":42}"#) };
                client.enqueue("payments", spec).await
            })
        };
        let unkeyed = {
            let client = client.clone();
            tokio::spawn(async move { client.enqueue("payments", task(r#"{"amount":7}"#)).await })
        };
        // Both were executed once a read of the second task is held (it shows
        // a record not yet durable, so it waits for the held sync too); a
        // read answered at once (`404`) came before it executed.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        http.set_read_timeout(Duration::from_millis(200));
        loop {
            assert!(std::time::Instant::now() < deadline, "the enqueues were never executed");
            http.send_raw(&support::request_bytes("GET", "/v1/tasks/2", None));
            match http.read_response() {
                Err(support::ReadError::TimedOut) => break,
                Ok(response) => assert_eq!(response.status, 404, "a read showed a task before its sync: {response:?}"),
                Err(error) => panic!("{error:?}"),
            }
            // Lets the client's tasks run (this runtime may have one thread).
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!keyed.is_finished() && !unkeyed.is_finished(), "replies wait for the held sync");

        // kill -9 and restart on the same port (without the gate), off this thread so
        // the client's tasks keep running and see the connection drop.
        let server = tokio::task::spawn_blocking(move || server.crash_and_restart_binary(&[])).await.unwrap();
        assert_eq!(binary_addr(&server), addr);

        let keyed = keyed.await.unwrap().expect("the keyed enqueue is resent after the reconnect");
        let unkeyed = unkeyed.await.unwrap();
        assert!(
            matches!(unkeyed, Err(ClientError::ConnectionLost { resend_safe: false, .. })),
            "an enqueue without a key fails as unknown: {unkeyed:?}"
        );

        // Exactly one task carries the key, whether or not its record survived
        // the kill (it was written, not synced): the resend found it, or made it.
        let mut http = server.client();
        let mut with_key = Vec::new();
        for id in 1..=4 {
            let response = http.get(&format!("/v1/tasks/{id}"));
            if response.status == 200 && response.body["key"] == json!("payment-42") {
                with_key.push(id);
            }
        }
        assert_eq!(with_key, [keyed.id], "one task with the key, the one the client was given");
        let view = client.get_task(keyed.id).await.unwrap();
        assert_eq!(view.payload, Bytes::from_static(br#"{"amount":42}"#));
        drop(server);
    });
}

// ---- differential: HTTP and binary, same sequence, same outcome ------------------------

/// A small xorshift generator: the seed is the whole test case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One operation of the random sequence, protocol-neutral.
#[derive(Clone, Debug)]
enum Op {
    Configure {
        queue: String,
        discipline: &'static str,
        max_attempts: u32,
        backoff_ms: u64,
        group_concurrency: Option<u32>,
    },
    Enqueue {
        queue: String,
        spec: Spec,
    },
    Batch {
        queue: String,
        specs: Vec<Spec>,
    },
    Dequeue {
        queues: Vec<String>,
        max: u16,
    },
    /// `pick` chooses among the tasks the driver holds a lease for (or the
    /// lease is wrong, when `wrong_lease`).
    Complete {
        pick: u64,
        wrong_lease: bool,
        result: Option<String>,
    },
    Fail {
        pick: u64,
        retry: bool,
    },
    Extend {
        pick: u64,
    },
    Cancel {
        id: u64,
    },
    Get {
        id: u64,
    },
    DeleteQueue {
        queue: String,
    },
}

#[derive(Clone, Debug)]
struct Spec {
    payload: String,
    priority: i32,
    group: Option<String>,
    delay_ms: u64,
    key: Option<String>,
    /// `Ok(id)`: an existing task (or not); `Err(k)`: the k-th of the batch.
    depends_on: Vec<Result<u64, u32>>,
}

const LEASE_MS: u64 = 600_000;
const QUEUES: [&str; 3] = ["alpha", "beta", "gamma"];

fn random_op(rng: &mut Rng, ids_max: u64) -> Op {
    let queue = |rng: &mut Rng| QUEUES[rng.below(3) as usize].to_string();
    let spec = |rng: &mut Rng, batch_index: Option<u32>| {
        let mut depends_on = Vec::new();
        for _ in 0..rng.below(3) {
            if let Some(k) = batch_index.filter(|&k| k > 0 && rng.chance(50)) {
                depends_on.push(Err(rng.below(u64::from(k)) as u32));
            } else if ids_max > 0 {
                // Now and then a task that does not exist.
                depends_on.push(Ok(1 + rng.below(ids_max + 2)));
            }
        }
        Spec {
            payload: json!({"n": rng.below(1000), "s": format!("t{}", rng.below(10))}).to_string(),
            priority: rng.below(11) as i32 - 5,
            group: rng.chance(40).then(|| format!("g{}", rng.below(3))),
            // Long enough that nothing becomes ready during the test.
            delay_ms: if rng.chance(10) { 600_000 } else { 0 },
            key: rng.chance(30).then(|| format!("k{}", rng.below(15))),
            depends_on,
        }
    };
    match rng.below(100) {
        0..=4 => Op::Configure {
            queue: queue(rng),
            discipline: ["fifo", "lifo", "priority", "round_robin"][rng.below(4) as usize],
            max_attempts: 1 + rng.below(3) as u32,
            // 0: a retried task is ready at once; else it stays delayed for the whole test.
            backoff_ms: if rng.chance(50) { 0 } else { 600_000 },
            group_concurrency: rng.chance(50).then(|| 1 + rng.below(2) as u32),
        },
        5..=29 => Op::Enqueue { queue: queue(rng), spec: spec(rng, None) },
        30..=36 => {
            let len = 1 + rng.below(4) as u32;
            Op::Batch { queue: queue(rng), specs: (0..len).map(|k| spec(rng, Some(k))).collect() }
        }
        37..=54 => {
            let mut queues: Vec<String> = (0..1 + rng.below(3)).map(|_| queue(rng)).collect();
            queues.dedup();
            Op::Dequeue { queues, max: 1 + rng.below(3) as u16 }
        }
        55..=67 => Op::Complete {
            pick: rng.next(),
            wrong_lease: rng.chance(10),
            result: rng.chance(50).then(|| json!({"r": rng.below(100)}).to_string()),
        },
        68..=77 => Op::Fail { pick: rng.next(), retry: rng.chance(70) },
        78..=81 => Op::Extend { pick: rng.next() },
        82..=87 => Op::Cancel { id: 1 + rng.below(ids_max + 2) },
        88..=98 => Op::Get { id: 1 + rng.below(ids_max + 2) },
        _ => Op::DeleteQueue { queue: queue(rng) },
    }
}

/// What one step returned, without what differs between two servers (lease
/// tokens and times): the value both drivers must agree on.
type Outcome = Value;

fn error_outcome(code: &str) -> Outcome {
    json!({"error": code})
}

/// The leases a driver holds, by task id (ordered, so `pick` chooses the same
/// task on both sides).
type Leases = BTreeMap<u64, u64>;

fn pick(leases: &Leases, pick: u64) -> Option<(u64, u64)> {
    if leases.is_empty() {
        return None;
    }
    leases.iter().nth((pick % leases.len() as u64) as usize).map(|(id, lease)| (*id, *lease))
}

/// Drives the sequence over HTTP (support's raw client).
struct HttpDriver {
    client: support::Client,
    leases: Leases,
}

impl HttpDriver {
    fn outcome(response: &support::Response, ok: impl FnOnce(&Value) -> Outcome) -> Outcome {
        if (200..300).contains(&response.status) {
            ok(&response.body)
        } else {
            error_outcome(response.code())
        }
    }

    fn spec_json(spec: &Spec) -> Value {
        let payload: Value = serde_json::from_str(&spec.payload).unwrap();
        let mut body = json!({"payload": payload, "priority": spec.priority, "delay_ms": spec.delay_ms});
        if let Some(group) = &spec.group {
            body["group"] = json!(group);
        }
        if let Some(key) = &spec.key {
            body["key"] = json!(key);
        }
        if !spec.depends_on.is_empty() {
            let deps: Vec<String> = spec
                .depends_on
                .iter()
                .map(|dep| match dep {
                    Ok(id) => id.to_string(),
                    Err(k) => format!("#{k}"),
                })
                .collect();
            body["depends_on"] = json!(deps);
        }
        body
    }

    fn step(&mut self, op: &Op) -> Outcome {
        let c = &mut self.client;
        match op {
            Op::Configure { queue, discipline, max_attempts, backoff_ms, group_concurrency } => {
                let body = json!({"discipline": discipline, "lease_ms": LEASE_MS, "max_attempts": max_attempts,
                    "backoff_ms": backoff_ms, "backoff_max_ms": 600_000, "group_concurrency": group_concurrency});
                let response = c.put(&format!("/v1/queues/{queue}"), body);
                Self::outcome(&response, |body| body.clone())
            }
            Op::Enqueue { queue, spec } => {
                let response = c.post(&format!("/v1/queues/{queue}/tasks"), Self::spec_json(spec));
                let created = response.status == 201;
                Self::outcome(&response, |body| json!({"id": body["id"], "state": body["state"], "created": created}))
            }
            Op::Batch { queue, specs } => {
                let tasks: Vec<Value> = specs.iter().map(Self::spec_json).collect();
                let response = c.post(&format!("/v1/queues/{queue}/tasks/batch"), json!({"tasks": tasks}));
                Self::outcome(&response, |body| json!({"ids": body["ids"], "states": body["states"]}))
            }
            Op::Dequeue { queues, max } => {
                let response =
                    c.post("/v1/dequeue", json!({"queues": queues, "max": max, "lease_ms": LEASE_MS, "wait_ms": 0}));
                let mut leased = Vec::new();
                if response.status == 200 {
                    for t in response.body["tasks"].as_array().unwrap() {
                        let id = support::as_id(&t["id"]);
                        self.leases.insert(id, support::as_id(&t["lease"]));
                        leased.push(json!({"id": id, "queue": t["queue"], "payload": t["payload"].to_string(),
                            "priority": t["priority"], "group": t["group"], "attempt": t["attempt"]}));
                    }
                }
                Self::outcome(&response, |_| json!(leased))
            }
            Op::Complete { pick: p, wrong_lease, result } => {
                let Some((id, lease)) = pick(&self.leases, *p) else { return json!("no lease") };
                let lease = if *wrong_lease { lease ^ 1 } else { lease };
                let mut body = json!({"lease": lease.to_string()});
                if let Some(result) = result {
                    body["result"] = serde_json::from_str(result).unwrap();
                }
                let response = c.post(&format!("/v1/tasks/{id}/complete"), body);
                if response.status == 200 {
                    self.leases.remove(&id);
                }
                Self::outcome(&response, |body| json!({"id": id, "state": body["state"]}))
            }
            Op::Fail { pick: p, retry } => {
                let Some((id, lease)) = pick(&self.leases, *p) else { return json!("no lease") };
                let body = json!({"lease": lease.to_string(), "error": format!("failed {id}"), "retry": retry});
                let response = c.post(&format!("/v1/tasks/{id}/fail"), body);
                self.leases.remove(&id);
                Self::outcome(&response, |body| json!({"id": id, "state": body["state"]}))
            }
            Op::Extend { pick: p } => {
                let Some((id, lease)) = pick(&self.leases, *p) else { return json!("no lease") };
                let response = c
                    .post(&format!("/v1/tasks/{id}/extend"), json!({"lease": lease.to_string(), "lease_ms": LEASE_MS}));
                Self::outcome(&response, |_| json!({"extended": id}))
            }
            Op::Cancel { id } => {
                let response = c.delete(&format!("/v1/tasks/{id}"));
                Self::outcome(&response, |body| json!({"id": id, "state": body["state"]}))
            }
            Op::Get { id } => {
                let response = c.get(&format!("/v1/tasks/{id}"));
                Self::outcome(&response, comparable_task)
            }
            Op::DeleteQueue { queue } => {
                let response = c.delete(&format!("/v1/queues/{queue}?force=true"));
                Self::outcome(&response, |_| json!({"deleted": queue}))
            }
        }
    }
}

/// Drives the sequence through the blocking binary client.
struct BinaryDriver {
    client: tqx_client::blocking::Client,
    leases: Leases,
}

fn state_name(state: TaskState) -> &'static str {
    match state {
        TaskState::Waiting => "waiting",
        TaskState::Delayed => "delayed",
        TaskState::Ready => "ready",
        TaskState::Leased => "leased",
        TaskState::Completed => "completed",
        TaskState::Dead => "dead",
        TaskState::Cancelled => "cancelled",
    }
}

impl BinaryDriver {
    fn outcome<T>(result: Result<T, ClientError>, ok: impl FnOnce(T) -> Outcome) -> Outcome {
        match result {
            Ok(value) => ok(value),
            Err(ClientError::Server { code, .. }) => error_outcome(code.as_str()),
            Err(other) => panic!("the binary client failed: {other}"),
        }
    }

    fn spec(spec: &Spec) -> TaskSpec {
        TaskSpec {
            payload: Bytes::from(spec.payload.clone()),
            priority: spec.priority,
            group: spec.group.clone(),
            delay_ms: spec.delay_ms,
            max_attempts: None,
            depends_on: spec
                .depends_on
                .iter()
                .map(|dep| match dep {
                    Ok(id) => Dep::Task(*id),
                    Err(k) => Dep::Batch(*k),
                })
                .collect(),
            key: spec.key.clone(),
        }
    }

    fn step(&mut self, op: &Op) -> Outcome {
        let c = &self.client;
        match op {
            Op::Configure { queue, discipline, max_attempts, backoff_ms, group_concurrency } => {
                let patch = QueuePatch {
                    discipline: Some(match *discipline {
                        "fifo" => Discipline::Fifo,
                        "lifo" => Discipline::Lifo,
                        "priority" => Discipline::Priority,
                        _ => Discipline::RoundRobin,
                    }),
                    lease_ms: Some(LEASE_MS),
                    max_attempts: Some(*max_attempts),
                    backoff_ms: Some(*backoff_ms),
                    backoff_max_ms: Some(600_000),
                    retention_ms: None,
                    dead_retention_ms: None,
                    group_concurrency: Some(*group_concurrency),
                };
                // Rendered by the HTTP renderer, as the CLI does: the same JSON.
                Self::outcome(c.configure_queue(queue, &patch), |info| {
                    let body = taskqueuex::cli::binary::json_body(&taskqueuex::cli::binary::queue(info));
                    serde_json::from_slice(&body).unwrap()
                })
            }
            Op::Enqueue { queue, spec } => Self::outcome(
                c.enqueue(queue, Self::spec(spec)),
                |e| json!({"id": e.id.to_string(), "state": state_name(e.state), "created": e.created}),
            ),
            Op::Batch { queue, specs } => {
                Self::outcome(c.enqueue_batch(queue, specs.iter().map(Self::spec).collect()), |entries| {
                    json!({"ids": entries.iter().map(|e| e.id.to_string()).collect::<Vec<_>>(),
                        "states": entries.iter().map(|e| state_name(e.state)).collect::<Vec<_>>()})
                })
            }
            Op::Dequeue { queues, max } => Self::outcome(c.dequeue(queues, *max, Some(LEASE_MS), 0), |tasks| {
                let mut leased = Vec::new();
                for t in tasks {
                    self.leases.insert(t.id, t.lease);
                    // As the HTTP API renders it (text of a JSON value, re-serialized).
                    let payload: Value = serde_json::from_slice(&t.payload).unwrap();
                    leased.push(json!({"id": t.id, "queue": t.queue, "payload": payload.to_string(),
                        "priority": t.priority, "group": t.group, "attempt": t.attempt}));
                }
                json!(leased)
            }),
            Op::Complete { pick: p, wrong_lease, result } => {
                let Some((id, lease)) = pick(&self.leases, *p) else { return json!("no lease") };
                let lease = if *wrong_lease { lease ^ 1 } else { lease };
                let result = result.as_ref().map(|r| Bytes::from(r.clone()));
                let outcome = c.complete(id, lease, result);
                if outcome.is_ok() {
                    self.leases.remove(&id);
                }
                Self::outcome(outcome, |state| json!({"id": id, "state": state_name(state)}))
            }
            Op::Fail { pick: p, retry } => {
                let Some((id, lease)) = pick(&self.leases, *p) else { return json!("no lease") };
                let outcome = c.fail(id, lease, &format!("failed {id}"), *retry);
                self.leases.remove(&id);
                Self::outcome(outcome, |state| json!({"id": id, "state": state_name(state)}))
            }
            Op::Extend { pick: p } => {
                let Some((id, lease)) = pick(&self.leases, *p) else { return json!("no lease") };
                Self::outcome(c.extend(id, lease, LEASE_MS), |_| json!({"extended": id}))
            }
            Op::Cancel { id } => Self::outcome(c.cancel(*id), |state| json!({"id": id, "state": state_name(state)})),
            Op::Get { id } => Self::outcome(c.get_task(*id), |view| {
                let body = taskqueuex::cli::binary::json_body(&taskqueuex::cli::binary::task(view));
                comparable_task(&serde_json::from_slice(&body).unwrap())
            }),
            Op::DeleteQueue { queue } => Self::outcome(c.delete_queue(queue, true), |()| json!({"deleted": queue})),
        }
    }
}

/// A task object without what two servers never share: times become whether
/// they are set.
fn comparable_task(task: &Value) -> Value {
    let mut task = task.clone();
    for field in ["created_at_ms", "updated_at_ms", "not_before_ms", "lease_expires_at_ms", "purge_at_ms"] {
        task[field] = json!(!task[field].is_null());
    }
    task
}

#[test]
fn the_same_random_sequence_over_http_and_binary_ends_in_the_same_state() {
    let seed = std::env::var("TQX_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| support::now_ms() ^ u64::from(std::process::id()) << 32)
        .max(1);
    const STEPS: usize = 400;
    eprintln!("differential seed {seed} (replay with TQX_DIFF_SEED={seed})");

    let http_server = Server::start_binary("127.0.0.1:0", MEMORY);
    let binary_server = Server::start_binary("127.0.0.1:0", MEMORY);
    let mut http = HttpDriver { client: http_server.client(), leases: Leases::new() };
    let client = tqx_client::blocking::Client::connect(&binary_addr(&binary_server), ClientOptions::default()).unwrap();
    let mut binary = BinaryDriver { client, leases: Leases::new() };

    let mut rng = Rng(seed);
    let mut ids_max = 0u64;
    for step in 0..STEPS {
        let op = random_op(&mut rng, ids_max);
        let over_http = http.step(&op);
        let over_binary = binary.step(&op);
        assert_eq!(over_http, over_binary, "seed {seed}, step {step}: {op:?}");
        // Ids are assigned identically: the sequence is the same.
        for id in over_http["id"]
            .as_str()
            .into_iter()
            .chain(over_http["ids"].as_array().into_iter().flatten().filter_map(Value::as_str))
        {
            ids_max = ids_max.max(id.parse().unwrap());
        }
        assert_eq!(
            http.leases.keys().collect::<Vec<_>>(),
            binary.leases.keys().collect::<Vec<_>>(),
            "seed {seed}, step {step}"
        );
    }

    // The final state of every task and queue, through each server's HTTP API.
    let mut http_view = http_server.client();
    let mut binary_view = binary_server.client();
    for id in 1..=ids_max + 1 {
        let path = format!("/v1/tasks/{id}");
        let (a, b) = (http_view.get(&path), binary_view.get(&path));
        assert_eq!(a.status, b.status, "seed {seed}: task {id}");
        assert_eq!(comparable_task(&a.body), comparable_task(&b.body), "seed {seed}: task {id}");
    }
    let (a, b) = (http_view.get("/v1/queues"), binary_view.get("/v1/queues"));
    assert_eq!(a.body, b.body, "seed {seed}: queues");
    assert!(ids_max > 50, "seed {seed}: the sequence did create tasks ({ids_max})");
}

// ---- the CLI -------------------------------------------------------------------------

struct CliRun {
    status: i32,
    stdout: String,
    stderr: String,
}

fn tqx(args: &[&str]) -> CliRun {
    let output = Command::new(env!("CARGO_BIN_EXE_tqx")).args(args).env_remove("TQX_SERVER").output().unwrap();
    CliRun {
        status: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// The printed JSON with what differs between two servers (lease tokens, times)
/// replaced: one member per line in the CLI's output, so line by line.
fn normalized(stdout: &str) -> String {
    stdout
        .lines()
        .map(|line| {
            let key = line.trim_start().split(':').next().unwrap_or("");
            if key == "\"lease\""
                || (key.ends_with("_at_ms\"")
                    && !line.trim_end().ends_with("null,")
                    && !line.trim_end().ends_with("null"))
            {
                let indent = &line[..line.len() - line.trim_start().len()];
                format!("{indent}{key}: <varies>")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_cli_prints_the_same_json_over_binary_as_over_http() {
    // Two servers, one driven by each protocol through the same commands.
    let http_server = Server::start_binary("127.0.0.1:0", MEMORY);
    let binary_server = Server::start_binary("127.0.0.1:0", MEMORY);
    let http_url = format!("http://{}", http_server.addr);
    let binary = binary_addr(&binary_server);
    let run = |args: &[&str]| -> (CliRun, CliRun) {
        let mut over_http = args.to_vec();
        over_http.extend(["--server", &http_url]);
        let mut over_binary = args.to_vec();
        over_binary.extend(["--binary", "--server", &binary]);
        let (a, b) = (tqx(&over_http), tqx(&over_binary));
        assert_eq!(a.status, b.status, "{args:?}: exit status\nhttp: {}\nbinary: {}", a.stderr, b.stderr);
        assert_eq!(normalized(&a.stdout), normalized(&b.stdout), "{args:?}");
        (a, b)
    };
    let lease_of = |run: &CliRun, index: usize| -> String {
        let body: Value = serde_json::from_str(&run.stdout).unwrap();
        body["tasks"][index]["lease"].as_str().unwrap().to_string()
    };

    let (enqueued, _) = run(&["enqueue", "mail", r#"{"to": "a@b.c", "n": 1.50}"#, "--priority", "5", "--key", "k1"]);
    assert_eq!(enqueued.status, 0);
    assert!(enqueued.stdout.contains("\"id\": \"1\""), "{}", enqueued.stdout);
    run(&["enqueue", "mail", r#"{"to": "a@b.c"}"#, "--key", "k1"]); // the original again
    run(&["enqueue", "mail", r#""plain text, a JSON string""#, "--group", "g", "--max-attempts", "1"]);
    run(&["enqueue", "later", "[1, 2]", "--depends-on", "1", "--delay-ms", "0"]);
    let (leased_http, leased_binary) = run(&["dequeue", "mail", "--max", "2", "--lease-ms", "60000"]);
    run(&["task", "1"]);
    run(&["task", "2"]);
    run(&["queue", "mail"]);

    // Each side completes, fails and extends with its own lease tokens.
    for (args_http, args_binary) in [
        (
            vec!["extend".to_string(), "1".into(), lease_of(&leased_http, 0), "90000".into()],
            vec!["extend".to_string(), "1".into(), lease_of(&leased_binary, 0), "90000".into()],
        ),
        (
            vec![
                "complete".to_string(),
                "1".into(),
                lease_of(&leased_http, 0),
                "--result".into(),
                r#"{"ok": true}"#.into(),
            ],
            vec![
                "complete".to_string(),
                "1".into(),
                lease_of(&leased_binary, 0),
                "--result".into(),
                r#"{"ok": true}"#.into(),
            ],
        ),
        (
            vec!["fail".to_string(), "2".into(), lease_of(&leased_http, 1), "no such mailbox".into()],
            vec!["fail".to_string(), "2".into(), lease_of(&leased_binary, 1), "no such mailbox".into()],
        ),
    ] {
        let mut over_http: Vec<&str> = args_http.iter().map(String::as_str).collect();
        over_http.extend(["--server", &http_url]);
        let mut over_binary: Vec<&str> = args_binary.iter().map(String::as_str).collect();
        over_binary.extend(["--binary", "--server", &binary]);
        let (a, b) = (tqx(&over_http), tqx(&over_binary));
        assert_eq!((a.status, normalized(&a.stdout)), (b.status, normalized(&b.stdout)), "{args_http:?}");
        assert_eq!(a.status, 0, "{}", a.stderr);
    }
    run(&["task", "1"]);
    run(&["task", "2"]);
    run(&["task", "3"]);
    run(&["cancel", "3"]);
    run(&["queues"]);

    // Errors: the same exit code (docs/cli.md) and the same error body on
    // stderr (after the first line, which names the HTTP status or the code).
    let (a, b) = run(&["task", "99"]);
    assert_eq!(a.status, 3, "not found");
    let body = |stderr: &str| stderr.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&a.stderr), body(&b.stderr));
    assert!(body(&b.stderr).contains("task_not_found"), "{}", b.stderr);
    let (a, b) = run(&["complete", "1", "12345"]);
    assert_eq!((a.status, body(&a.stderr)), (4, body(&b.stderr)), "a conflict");

    // Unreachable: exit 5 (unavailable); a bad address: exit 2 (usage).
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let unreachable = tqx(&["queues", "--binary", "--server", &closed_port.to_string()]);
    assert_eq!(unreachable.status, 5, "{}", unreachable.stderr);
    assert!(unreachable.stderr.contains("cannot connect"), "{}", unreachable.stderr);
    let bad_address = tqx(&["queues", "--binary", "--server", "http://127.0.0.1:7701"]);
    assert_eq!(bad_address.status, 2, "{}", bad_address.stderr);
}
