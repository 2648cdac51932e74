//! The HTTP/JSON API of the real `tqx serve` binary, endpoint by endpoint, against
//! docs/http-api.md (the contract) and docs/engine.md (the semantics).
//!
//! Each test starts its own server on a port-0 loopback address.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{as_id, assert_json_content_type, json_request, now_ms, Client, Server};

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap_or_else(|| panic!("not an object: {value}")).keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn ids(tasks: &[Value]) -> Vec<String> {
    tasks.iter().map(|t| t["id"].as_str().unwrap().to_string()).collect()
}

fn payloads(tasks: &[Value]) -> Vec<Value> {
    tasks.iter().map(|t| t["payload"].clone()).collect()
}

/// Dequeues one task and returns (id, lease).
#[track_caller]
fn lease_one(client: &mut Client, queue: &str) -> (String, String) {
    let tasks = client.dequeue(&[queue], 1);
    assert_eq!(tasks.len(), 1, "one task to lease in {queue}: {tasks:?}");
    (tasks[0]["id"].as_str().unwrap().to_string(), tasks[0]["lease"].as_str().unwrap().to_string())
}

const QUEUE_KEYS: &[&str] = &["name", "config", "counts"];
const CONFIG_KEYS: &[&str] = &[
    "discipline",
    "lease_ms",
    "max_attempts",
    "backoff_ms",
    "backoff_max_ms",
    "retention_ms",
    "dead_retention_ms",
    "group_concurrency",
];
const COUNT_KEYS: &[&str] = &["waiting", "delayed", "ready", "leased", "completed", "dead", "cancelled"];
const LEASED_KEYS: &[&str] =
    &["id", "queue", "payload", "priority", "group", "attempt", "lease", "lease_expires_at_ms"];
const TASK_KEYS: &[&str] = &[
    "id",
    "queue",
    "state",
    "payload",
    "priority",
    "group",
    "depends_on",
    "key",
    "attempts",
    "max_attempts",
    "result",
    "error",
    "created_at_ms",
    "updated_at_ms",
    "not_before_ms",
    "lease_expires_at_ms",
    "purge_at_ms",
];

#[track_caller]
fn assert_queue_shape(queue: &Value, name: &str) {
    assert_eq!(keys(queue), set(QUEUE_KEYS), "queue object {queue}");
    assert_eq!(queue["name"], json!(name));
    assert_eq!(keys(&queue["config"]), set(CONFIG_KEYS), "queue config {queue}");
    assert_eq!(keys(&queue["counts"]), set(COUNT_KEYS), "queue counts {queue}");
    for count in COUNT_KEYS {
        assert!(queue["counts"][count].is_u64(), "count {count} is a number: {queue}");
    }
}

#[track_caller]
fn counts(waiting: u64, delayed: u64, ready: u64, leased: u64, completed: u64, dead: u64, cancelled: u64) -> Value {
    json!({"waiting": waiting, "delayed": delayed, "ready": ready, "leased": leased, "completed": completed,
           "dead": dead, "cancelled": cancelled})
}

// ---------------------------------------------------------------- health

#[test]
fn healthz_answers_ok() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let response = client.get("/healthz");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, json!({"status": "ok"}));
    assert_json_content_type(&response);
    // Keep-alive: the same connection answers again.
    assert_eq!(client.get("/healthz").status, 200);
    // The body ends with a newline, as every JSON body does.
    assert_eq!(response.raw_text(), "{\"status\":\"ok\"}\n");
}

/// `HEAD /healthz` (load balancers probe with it) answers as GET does, without
/// the body: pipelined before a GET on one connection, the GET's status line
/// follows the HEAD's blank line at once. And curl, a real client, agrees.
#[test]
fn head_healthz_answers_like_get_without_the_body() {
    use std::io::Read;
    let server = Server::start(&[]);
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream
        .write_all(
            b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, rest) = answer.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("\r\nContent-Length: 16\r\n"), "{answer}");
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "no body after the HEAD's head: {answer}");
    assert!(rest.ends_with("\r\n\r\n{\"status\":\"ok\"}\n"), "{answer}");

    let curl = std::process::Command::new("curl")
        .args(["-sS", "--head", "--max-time", "30", &format!("http://{}/healthz", server.addr)])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&curl.stdout);
    assert!(curl.status.success() && text.starts_with("HTTP/1.1 200 OK"), "{text} {curl:?}");
}

/// `--pin-workers-with-reactors` (with pinning forced on): the worker shares
/// the reactor's core, and requests still reach it and come back.
#[test]
fn workers_pinned_with_reactors_serve() {
    let server = Server::start(&["--pin", "--pin-workers-with-reactors"]);
    let mut client = server.client();
    let enqueued = client.post("/v1/queues/pinned/tasks", json!({"payload": {"n": 1}}));
    assert_eq!(enqueued.status, 201, "{enqueued:?}");
    let queue = client.get("/v1/queues/pinned");
    assert_eq!(queue.body["counts"], counts(0, 0, 1, 0, 0, 0, 0));
}

// ---------------------------------------------------------------- queues

#[test]
fn put_queue_creates_with_defaults_on_empty_body() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let response = client.request_bytes("PUT", "/v1/queues/emails", Some(b""));
    assert_eq!(response.status, 200, "{response:?}");
    assert_json_content_type(&response);
    assert_queue_shape(&response.body, "emails");
    assert_eq!(
        response.body["config"],
        json!({"discipline": "fifo", "lease_ms": 30000, "max_attempts": 3, "backoff_ms": 1000,
               "backoff_max_ms": 60000, "retention_ms": 3600000, "dead_retention_ms": 604800000,
               "group_concurrency": null})
    );
    assert_eq!(response.body["counts"], counts(0, 0, 0, 0, 0, 0, 0));
    // `{}` is the same as an empty body, and changes nothing.
    let again = client.put("/v1/queues/emails", json!({}));
    assert_eq!(again.status, 200);
    assert_eq!(again.body, response.body);
}

#[test]
fn put_queue_configures_and_keeps_absent_fields() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let queue = client.create_queue("emails", json!({"discipline": "priority", "lease_ms": 10000}));
    assert_queue_shape(&queue, "emails");
    assert_eq!(queue["config"]["discipline"], "priority");
    assert_eq!(queue["config"]["lease_ms"], 10000);
    assert_eq!(queue["config"]["max_attempts"], 3);

    let queue = client.create_queue(
        "emails",
        json!({"max_attempts": 5, "backoff_ms": 10, "backoff_max_ms": 20, "retention_ms": 0,
               "dead_retention_ms": 1000, "group_concurrency": 2}),
    );
    assert_eq!(
        queue["config"],
        json!({"discipline": "priority", "lease_ms": 10000, "max_attempts": 5, "backoff_ms": 10,
               "backoff_max_ms": 20, "retention_ms": 0, "dead_retention_ms": 1000, "group_concurrency": 2})
    );
    // `"group_concurrency": null` removes the limit.
    let queue = client.create_queue("emails", json!({"group_concurrency": null}));
    assert_eq!(queue["config"]["group_concurrency"], Value::Null);
    assert_eq!(queue["config"]["max_attempts"], 5);
    // GET shows the same.
    let got = client.get("/v1/queues/emails");
    assert_eq!(got.status, 200);
    assert_eq!(got.body, queue);
}

#[test]
fn get_queue_shows_counts_by_state() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.create_queue("q", json!({"backoff_ms": 60000, "backoff_max_ms": 60000}));
    let a = client.enqueue("q", json!({"payload": "a"}));
    client.enqueue("q", json!({"payload": "b", "depends_on": [a]})); // waiting
    client.enqueue("q", json!({"payload": "c", "delay_ms": 600000})); // delayed
    client.enqueue("q", json!({"payload": "d"})); // ready
    let cancelled = client.enqueue("q", json!({"payload": "e"}));
    assert_eq!(client.delete(&format!("/v1/tasks/{cancelled}")).status, 200);
    // Lease a, d: complete a (b becomes ready), fail d without retry (dead).
    let tasks = client.dequeue(&["q"], 2);
    assert_eq!(payloads(&tasks), vec![json!("a"), json!("d")]);
    let lease = |t: &Value| t["lease"].as_str().unwrap().to_string();
    let done = client
        .post(&format!("/v1/tasks/{}/complete", tasks[0]["id"].as_str().unwrap()), json!({"lease": lease(&tasks[0])}));
    assert_eq!(done.status, 200);
    let dead = client.post(
        &format!("/v1/tasks/{}/fail", tasks[1]["id"].as_str().unwrap()),
        json!({"lease": lease(&tasks[1]), "error": "boom", "retry": false}),
    );
    assert_eq!(dead.body["state"], "dead");
    client.enqueue("q", json!({"payload": "f"}));
    let leased = client.dequeue(&["q"], 1); // b (older than f)
    assert_eq!(payloads(&leased), vec![json!("b")]);
    let response = client.get("/v1/queues/q");
    assert_eq!(response.status, 200);
    assert_queue_shape(&response.body, "q");
    assert_eq!(response.body["counts"], counts(0, 1, 1, 1, 1, 1, 1));
}

#[test]
fn get_unknown_queue_is_queue_not_found() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.get("/v1/queues/nope").assert_error(404, "queue_not_found");
    // The connection stays open after a 404.
    assert_eq!(client.get("/healthz").status, 200);
}

#[test]
fn list_queues_in_name_order() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let empty = client.get("/v1/queues");
    assert_eq!(empty.status, 200);
    assert_eq!(empty.body, json!({"queues": []}));
    client.create_queue("beta", json!({}));
    client.create_queue("alpha", json!({"discipline": "lifo"}));
    client.enqueue("gamma", json!({"payload": 1})); // created by the enqueue
    let response = client.get("/v1/queues");
    assert_eq!(response.status, 200);
    assert_json_content_type(&response);
    assert_eq!(keys(&response.body), set(&["queues"]));
    let queues = response.body["queues"].as_array().unwrap();
    let names: Vec<&str> = queues.iter().map(|q| q["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);
    for queue in queues {
        assert_queue_shape(queue, queue["name"].as_str().unwrap());
    }
    assert_eq!(queues[0]["config"]["discipline"], "lifo");
    assert_eq!(queues[2]["counts"]["ready"], 1);
}

#[test]
fn delete_empty_queue() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.create_queue("emails", json!({}));
    let response = client.delete("/v1/queues/emails");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, json!({"deleted": "emails"}));
    client.get("/v1/queues/emails").assert_error(404, "queue_not_found");
    client.delete("/v1/queues/emails").assert_error(404, "queue_not_found");
}

#[test]
fn delete_queue_with_unfinished_tasks_is_queue_not_empty() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let id = client.enqueue("emails", json!({"payload": 1}));
    client.delete("/v1/queues/emails").assert_error(409, "queue_not_empty");
    client.delete("/v1/queues/emails?force=false").assert_error(409, "queue_not_empty");
    // Nothing changed.
    assert_eq!(client.task(&id)["state"], "ready");
    // Once every task has finished, a plain delete works.
    let (leased, lease) = lease_one(&mut client, "emails");
    assert_eq!(leased, id);
    assert_eq!(client.post(&format!("/v1/tasks/{id}/complete"), json!({"lease": lease})).status, 200);
    let response = client.delete("/v1/queues/emails");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, json!({"deleted": "emails"}));
}

#[test]
fn delete_queue_with_force_cancels_and_forgets_tasks_and_dependents() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let parent = client.enqueue("a", json!({"payload": "parent"}));
    let other = client.enqueue("a", json!({"payload": "other"}));
    let child = client.enqueue("b", json!({"payload": "child", "depends_on": [parent]}));
    let grandchild = client.enqueue("c", json!({"payload": "grandchild", "depends_on": [child]}));
    let response = client.delete("/v1/queues/a?force=true");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, json!({"deleted": "a"}));
    client.get("/v1/queues/a").assert_error(404, "queue_not_found");
    client.get(&format!("/v1/tasks/{parent}")).assert_error(404, "task_not_found");
    client.get(&format!("/v1/tasks/{other}")).assert_error(404, "task_not_found");
    let child = client.task(&child);
    assert_eq!(child["state"], "cancelled");
    assert_eq!(child["error"], json!(format!("dependency {parent} is cancelled")));
    let grandchild = client.task(&grandchild);
    assert_eq!(grandchild["state"], "cancelled");
    assert!(grandchild["error"].as_str().unwrap().starts_with("dependency "), "{grandchild}");
}

// ---------------------------------------------------------------- enqueue

#[test]
fn enqueue_creates_queue_and_answers_201() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let response = client.post("/v1/queues/emails/tasks", json!({"payload": {"to": "a@b.c"}, "priority": 5}));
    assert_eq!(response.status, 201, "{response:?}");
    assert_json_content_type(&response);
    assert_eq!(keys(&response.body), set(&["id", "state"]));
    assert_eq!(response.body["state"], "ready");
    let first = as_id(&response.body["id"]);
    assert!(first >= 1);
    let queue = client.get("/v1/queues/emails");
    assert_eq!(queue.status, 200);
    assert_eq!(queue.body["config"]["discipline"], "fifo");
    assert_eq!(queue.body["counts"]["ready"], 1);
    // Ids increase strictly.
    let second = as_id(&json!(client.enqueue("emails", json!({"payload": null}))));
    assert!(second > first);
    // Delayed and waiting states are reported.
    let delayed = client.post("/v1/queues/emails/tasks", json!({"payload": 1, "delay_ms": 60000}));
    assert_eq!((delayed.status, delayed.body["state"].clone()), (201, json!("delayed")));
    let waiting = client.post("/v1/queues/emails/tasks", json!({"payload": 1, "depends_on": [first.to_string()]}));
    assert_eq!((waiting.status, waiting.body["state"].clone()), (201, json!("waiting")));
}

#[test]
fn enqueue_with_a_held_key_answers_200_and_the_original() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let first = client.post("/v1/queues/emails/tasks", json!({"payload": "one", "key": "order-17"}));
    assert_eq!(first.status, 201);
    let id = first.body["id"].clone();
    let repeat = client.post("/v1/queues/emails/tasks", json!({"payload": "two", "key": "order-17"}));
    assert_eq!(repeat.status, 200, "{repeat:?}");
    assert_eq!(repeat.body, json!({"id": id, "state": "ready"}));
    // The repeat reports the current state, and changed nothing.
    let tasks = client.dequeue(&["emails"], 10);
    assert_eq!(payloads(&tasks), vec![json!("one")]);
    let repeat = client.post("/v1/queues/emails/tasks", json!({"payload": "three", "key": "order-17"}));
    assert_eq!(repeat.status, 200);
    assert_eq!(repeat.body, json!({"id": id, "state": "leased"}));
    assert_eq!(client.task(id.as_str().unwrap())["key"], "order-17");
    // The same key in another queue is another task.
    let other = client.post("/v1/queues/other/tasks", json!({"payload": "x", "key": "order-17"}));
    assert_eq!(other.status, 201);
    assert_ne!(other.body["id"], id);
}

#[test]
fn payload_is_returned_exactly_as_sent() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let payload_text = r#"{"b": 1,  "a":[1.50, 2e3, "\u00e9"], "big": 18446744073709551615}"#;
    let body = format!(r#"{{"payload": {payload_text}}}"#);
    let response = client.request_bytes("POST", "/v1/queues/q/tasks", Some(body.as_bytes()));
    assert_eq!(response.status, 201, "{response:?}");
    let id = response.body["id"].as_str().unwrap().to_string();
    let dequeued = client.request("POST", "/v1/dequeue", Some(&json!({"queues": ["q"]})));
    assert!(dequeued.raw_text().contains(payload_text), "dequeue returns the exact text: {}", dequeued.raw_text());
    let got = client.get(&format!("/v1/tasks/{id}"));
    assert!(got.raw_text().contains(payload_text), "lookup returns the exact text: {}", got.raw_text());
    // Any JSON value is a payload.
    for payload in [json!(null), json!(false), json!(-3), json!("text"), json!([1, [2]]), json!({})] {
        let id = client.enqueue("any", json!({"payload": payload}));
        assert_eq!(client.task(&id)["payload"], payload);
    }
}

// ---------------------------------------------------------------- batch

#[test]
fn batch_enqueue_answers_ids_and_states_with_local_dependencies() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let response = client.post(
        "/v1/queues/emails/tasks/batch",
        json!({"tasks": [{"payload": "fetch"}, {"payload": "render", "depends_on": ["#0"]},
                         {"payload": "send", "depends_on": ["#0", "#1"], "priority": 3}]}),
    );
    assert_eq!(response.status, 201, "{response:?}");
    assert_json_content_type(&response);
    assert_eq!(keys(&response.body), set(&["ids", "states"]));
    let ids: Vec<u64> = response.body["ids"].as_array().unwrap().iter().map(as_id).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids[0] < ids[1] && ids[1] < ids[2], "{ids:?}");
    assert_eq!(response.body["states"], json!(["ready", "waiting", "waiting"]));
    let render = client.task(&ids[1].to_string());
    assert_eq!(render["depends_on"], json!([ids[0].to_string()]));
    let send = client.task(&ids[2].to_string());
    assert_eq!(send["depends_on"], json!([ids[0].to_string(), ids[1].to_string()]));
    // The dependency chain runs in order.
    let (id, lease) = lease_one(&mut client, "emails");
    assert_eq!(id, ids[0].to_string());
    assert!(client.dequeue(&["emails"], 10).is_empty());
    assert_eq!(client.post(&format!("/v1/tasks/{id}/complete"), json!({"lease": lease})).status, 200);
    let (id, _) = lease_one(&mut client, "emails");
    assert_eq!(id, ids[1].to_string());
}

#[test]
fn batch_is_all_or_nothing_and_names_the_entry() {
    let server = Server::start(&[]);
    let mut client = server.client();
    // A forward `#k` reference.
    let response = client.post(
        "/v1/queues/emails/tasks/batch",
        json!({"tasks": [{"payload": 1}, {"payload": 2, "depends_on": ["#2"]}, {"payload": 3}]}),
    );
    response.assert_invalid("tasks[1].depends_on");
    // A wrong type in one entry.
    let response = client.post(
        "/v1/queues/emails/tasks/batch",
        json!({"tasks": [{"payload": 1}, {"payload": 2}, {"payload": 3, "priority": "high"}]}),
    );
    response.assert_invalid("tasks[2].priority");
    // A missing payload.
    let response = client.post("/v1/queues/emails/tasks/batch", json!({"tasks": [{"payload": 1}, {"priority": 1}]}));
    response.assert_invalid("tasks[1].payload");
    // No task (nor the queue) was created by any of them.
    client.get("/v1/queues/emails").assert_error(404, "queue_not_found");
    // Empty and missing lists are refused.
    client.post("/v1/queues/emails/tasks/batch", json!({"tasks": []})).assert_invalid("tasks");
    client.post("/v1/queues/emails/tasks/batch", json!({})).assert_invalid("tasks");
    // The connection is still usable, and a good batch goes through.
    let good = client.post("/v1/queues/emails/tasks/batch", json!({"tasks": [{"payload": 1}]}));
    assert_eq!(good.status, 201, "{good:?}");
}

// ---------------------------------------------------------------- dequeue

#[test]
fn dequeue_returns_leased_tasks_in_queue_order() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let a = client.enqueue("q1", json!({"payload": {"to": "a@b.c"}, "priority": 7, "group": "g"}));
    let b = client.enqueue("q2", json!({"payload": "b"}));
    let c = client.enqueue("q2", json!({"payload": "c"}));
    // A queue that does not exist is refused, naming it, and nothing is leased.
    let refused = client.post("/v1/dequeue", json!({"queues": ["q2", "unknown", "q1"], "max": 10}));
    assert_eq!((refused.status, refused.body["error"]["code"].as_str()), (404, Some("queue_not_found")), "{refused:?}");
    assert!(refused.body["error"]["message"].as_str().unwrap().contains("\"unknown\""), "{refused:?}");
    let before = now_ms();
    let response = client.post("/v1/dequeue", json!({"queues": ["q2", "q1"], "max": 10}));
    assert_eq!(response.status, 200, "{response:?}");
    assert_json_content_type(&response);
    assert_eq!(keys(&response.body), set(&["tasks"]));
    let tasks = response.body["tasks"].as_array().unwrap().clone();
    assert_eq!(ids(&tasks), vec![b.clone(), c, a.clone()]);
    for task in &tasks {
        assert_eq!(keys(task), set(LEASED_KEYS), "leased task {task}");
        assert_eq!(task["attempt"], 1);
        as_id(&task["lease"]);
        let expires = task["lease_expires_at_ms"].as_u64().unwrap();
        assert!(expires >= before + 30000 - 2000 && expires <= now_ms() + 30000 + 2000, "default lease: {task}");
    }
    assert_eq!(
        tasks[2],
        json!({"id": a, "queue": "q1", "payload": {"to": "a@b.c"}, "priority": 7, "group": "g", "attempt": 1,
               "lease": tasks[2]["lease"], "lease_expires_at_ms": tasks[2]["lease_expires_at_ms"]})
    );
    assert_eq!(tasks[0]["queue"], "q2");
    assert_eq!(tasks[0]["group"], Value::Null);
    // Now empty.
    assert_eq!(client.post("/v1/dequeue", json!({"queues": ["q1", "q2"]})).body, json!({"tasks": []}));
}

#[test]
fn dequeue_max_defaults_to_one_and_lease_ms_is_honoured() {
    let server = Server::start(&[]);
    let mut client = server.client();
    for i in 0..3 {
        client.enqueue("q", json!({"payload": i}));
    }
    let response = client.post("/v1/dequeue", json!({"queues": ["q"]}));
    assert_eq!(response.body["tasks"].as_array().unwrap().len(), 1, "{response:?}");
    let before = now_ms();
    let response = client.post("/v1/dequeue", json!({"queues": ["q"], "max": 2, "lease_ms": 5000}));
    let tasks = response.body["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    for task in tasks {
        let expires = task["lease_expires_at_ms"].as_u64().unwrap();
        assert!(expires >= before + 5000 - 1000 && expires <= now_ms() + 5000 + 1000, "lease_ms 5000: {task}");
    }
}

#[test]
fn dequeue_validates_its_fields() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.post("/v1/dequeue", json!({})).assert_invalid("queues");
    client.post("/v1/dequeue", json!({"queues": []})).assert_invalid("queues");
    let too_many: Vec<String> = (0..65).map(|i| format!("q{i}")).collect();
    client.post("/v1/dequeue", json!({"queues": too_many})).assert_invalid("queues");
    client.post("/v1/dequeue", json!({"queues": ["q"], "max": 0})).assert_invalid("max");
    client.post("/v1/dequeue", json!({"queues": ["q"], "max": 1001})).assert_invalid("max");
    client.post("/v1/dequeue", json!({"queues": ["q"], "wait_ms": 60001})).assert_invalid("wait_ms");
    client.post("/v1/dequeue", json!({"queues": ["q"], "lease_ms": 0})).assert_invalid("lease_ms");
    // The limits themselves are accepted (by a queue that exists).
    client.create_queue("q", json!({}));
    let ok = client.post("/v1/dequeue", json!({"queues": ["q"], "max": 1000, "wait_ms": 0}));
    assert_eq!(ok.status, 200, "{ok:?}");
}

// ---------------------------------------------------------------- tasks

#[test]
fn get_task_shows_every_field_through_its_life() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.create_queue("emails", json!({"retention_ms": 600000}));
    let before = now_ms();
    let id = client.enqueue(
        "emails",
        json!({"payload": {"to": "a@b.c"}, "priority": -4, "group": "tenant-1", "key": "k1", "max_attempts": 7}),
    );
    let response = client.get(&format!("/v1/tasks/{id}"));
    assert_eq!(response.status, 200);
    assert_json_content_type(&response);
    let task = response.body;
    assert_eq!(keys(&task), set(TASK_KEYS), "task object {task}");
    let created = task["created_at_ms"].as_u64().unwrap();
    assert!(created >= before - 1000 && created <= now_ms() + 1000, "{task}");
    assert_eq!(
        task,
        json!({"id": id, "queue": "emails", "state": "ready", "payload": {"to": "a@b.c"}, "priority": -4,
               "group": "tenant-1", "depends_on": [], "key": "k1", "attempts": 0, "max_attempts": 7,
               "result": null, "error": null, "created_at_ms": created, "updated_at_ms": task["updated_at_ms"],
               "not_before_ms": null, "lease_expires_at_ms": null, "purge_at_ms": null})
    );

    let (_, lease) = lease_one(&mut client, "emails");
    let task = client.task(&id);
    assert_eq!(task["state"], "leased");
    assert_eq!(task["attempts"], 1);
    assert!(task["lease_expires_at_ms"].as_u64().unwrap() >= created + 30000);
    assert!(task.get("lease").is_none(), "a lookup never shows the lease token: {task}");

    let done = client.post(&format!("/v1/tasks/{id}/complete"), json!({"lease": lease, "result": {"sent": true}}));
    assert_eq!(done.status, 200);
    let task = client.task(&id);
    assert_eq!(task["state"], "completed");
    assert_eq!(task["result"], json!({"sent": true}));
    assert_eq!(task["lease_expires_at_ms"], Value::Null);
    let updated = task["updated_at_ms"].as_u64().unwrap();
    assert!(updated >= created);
    assert_eq!(task["purge_at_ms"], json!(updated + 600000));

    // A delayed task has `not_before_ms`.
    let delayed = client.enqueue("emails", json!({"payload": 1, "delay_ms": 100000}));
    let task = client.task(&delayed);
    assert_eq!(task["state"], "delayed");
    let not_before = task["not_before_ms"].as_u64().unwrap();
    assert_eq!(not_before, task["created_at_ms"].as_u64().unwrap() + 100000);
}

#[test]
fn get_unknown_task_is_task_not_found() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.get("/v1/tasks/424242").assert_error(404, "task_not_found");
    client.delete("/v1/tasks/424242").assert_error(404, "task_not_found");
    client.post("/v1/tasks/424242/complete", json!({"lease": "1"})).assert_error(404, "task_not_found");
    client.post("/v1/tasks/424242/fail", json!({"lease": "1", "error": "x"})).assert_error(404, "task_not_found");
    client.post("/v1/tasks/424242/extend", json!({"lease": "1", "lease_ms": 10})).assert_error(404, "task_not_found");
}

#[test]
fn complete_answers_completed_and_releases_dependents() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let parent = client.enqueue("q", json!({"payload": 1}));
    let child = client.enqueue("q", json!({"payload": 2, "depends_on": [parent]}));
    let (id, lease) = lease_one(&mut client, "q");
    assert_eq!(id, parent);
    let response = client.post(&format!("/v1/tasks/{id}/complete"), json!({"lease": lease}));
    assert_eq!(response.status, 200, "{response:?}");
    assert_json_content_type(&response);
    assert_eq!(response.body, json!({"id": id, "state": "completed"}));
    assert_eq!(client.task(&id)["result"], Value::Null);
    assert_eq!(client.task(&child)["state"], "ready");
    // Completing again: the task is no longer leased.
    client.post(&format!("/v1/tasks/{id}/complete"), json!({"lease": lease})).assert_error(409, "not_leased");
}

#[test]
fn ids_and_leases_are_accepted_as_json_numbers() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let parent = client.enqueue("q", json!({"payload": 1}));
    let parent_number: u64 = parent.parse().unwrap();
    let child = client.enqueue("q", json!({"payload": 2, "depends_on": [parent_number]}));
    assert_eq!(client.task(&child)["depends_on"], json!([parent]));
    let (id, lease) = lease_one(&mut client, "q");
    let lease_number: u64 = lease.parse().unwrap();
    // serde_json writes a u64 exactly, even past 2^53.
    let body = format!(r#"{{"lease": {lease_number}}}"#);
    let response = client.request_bytes("POST", &format!("/v1/tasks/{id}/complete"), Some(body.as_bytes()));
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body["state"], "completed");
}

#[test]
fn fail_with_retry_and_backoff_is_delayed() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.create_queue("q", json!({"backoff_ms": 60000, "backoff_max_ms": 60000}));
    let id = client.enqueue("q", json!({"payload": 1}));
    let (_, lease) = lease_one(&mut client, "q");
    let response = client.post(&format!("/v1/tasks/{id}/fail"), json!({"lease": lease, "error": "smtp timeout"}));
    assert_eq!(response.status, 200, "{response:?}");
    assert_json_content_type(&response);
    assert_eq!(response.body, json!({"id": id, "state": "delayed"}));
    let task = client.task(&id);
    assert_eq!(task["state"], "delayed");
    assert_eq!(task["error"], "smtp timeout");
    let updated = task["updated_at_ms"].as_u64().unwrap();
    let not_before = task["not_before_ms"].as_u64().unwrap();
    // Equal jitter: at least half the nominal backoff.
    assert!(not_before >= updated + 30000 && not_before <= updated + 60000, "{task}");
    assert!(client.dequeue(&["q"], 1).is_empty());
}

#[test]
fn fail_with_retry_and_zero_backoff_is_ready() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.create_queue("q", json!({"backoff_ms": 0, "backoff_max_ms": 0}));
    let id = client.enqueue("q", json!({"payload": 1}));
    let (_, lease) = lease_one(&mut client, "q");
    let response =
        client.post(&format!("/v1/tasks/{id}/fail"), json!({"lease": lease, "error": "oops", "retry": true}));
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, json!({"id": id, "state": "ready"}));
    let tasks = client.dequeue(&["q"], 1);
    assert_eq!(ids(&tasks), vec![id.clone()]);
    assert_eq!(tasks[0]["attempt"], 2);
}

#[test]
fn fail_without_retry_or_attempts_left_is_dead() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.create_queue("q", json!({"backoff_ms": 0, "backoff_max_ms": 0}));
    let id = client.enqueue("q", json!({"payload": 1}));
    let (_, lease) = lease_one(&mut client, "q");
    let response =
        client.post(&format!("/v1/tasks/{id}/fail"), json!({"lease": lease, "error": "bad input", "retry": false}));
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, json!({"id": id, "state": "dead"}));
    let task = client.task(&id);
    assert_eq!(task["state"], "dead");
    assert_eq!(task["error"], "bad input");
    assert!(task["purge_at_ms"].is_u64());
    // With retry but no attempts left.
    let last = client.enqueue("q", json!({"payload": 2, "max_attempts": 1}));
    let (_, lease) = lease_one(&mut client, "q");
    let response = client.post(&format!("/v1/tasks/{last}/fail"), json!({"lease": lease, "error": "again"}));
    assert_eq!(response.body, json!({"id": last, "state": "dead"}));
}

#[test]
fn extend_moves_the_lease_end() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let id = client.enqueue("q", json!({"payload": 1}));
    let tasks = client.post("/v1/dequeue", json!({"queues": ["q"], "lease_ms": 1000})).body["tasks"].clone();
    let lease = tasks[0]["lease"].as_str().unwrap().to_string();
    let before = now_ms();
    let response = client.post(&format!("/v1/tasks/{id}/extend"), json!({"lease": lease, "lease_ms": 120000}));
    assert_eq!(response.status, 200, "{response:?}");
    assert_json_content_type(&response);
    assert_eq!(keys(&response.body), set(&["id", "lease_expires_at_ms"]));
    assert_eq!(response.body["id"], json!(id));
    let expires = response.body["lease_expires_at_ms"].as_u64().unwrap();
    assert!(expires >= before + 120000 - 1000 && expires <= now_ms() + 120000 + 1000, "{response:?}");
    assert_eq!(client.task(&id)["lease_expires_at_ms"], json!(expires));
    // Both fields are required.
    client.post(&format!("/v1/tasks/{id}/extend"), json!({"lease": lease})).assert_invalid("lease_ms");
    client.post(&format!("/v1/tasks/{id}/extend"), json!({"lease_ms": 10})).assert_invalid("lease");
}

#[test]
fn cancel_answers_cancelled_then_task_finished() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let id = client.enqueue("q", json!({"payload": 1}));
    let dependent = client.enqueue("q", json!({"payload": 2, "depends_on": [id]}));
    let response = client.delete(&format!("/v1/tasks/{id}"));
    assert_eq!(response.status, 200, "{response:?}");
    assert_json_content_type(&response);
    assert_eq!(response.body, json!({"id": id, "state": "cancelled"}));
    assert_eq!(client.task(&id)["state"], "cancelled");
    assert_eq!(client.task(&dependent)["state"], "cancelled");
    client.delete(&format!("/v1/tasks/{id}")).assert_error(409, "task_finished");
    // The connection stays open after a 409.
    assert_eq!(client.get("/healthz").status, 200);
}

#[test]
fn cancel_of_a_leased_task_makes_its_holder_not_leased() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let id = client.enqueue("q", json!({"payload": 1}));
    let (_, lease) = lease_one(&mut client, "q");
    assert_eq!(client.delete(&format!("/v1/tasks/{id}")).body, json!({"id": id, "state": "cancelled"}));
    client.post(&format!("/v1/tasks/{id}/complete"), json!({"lease": lease})).assert_error(409, "not_leased");
    client.post(&format!("/v1/tasks/{id}/fail"), json!({"lease": lease, "error": "x"})).assert_error(409, "not_leased");
    client
        .post(&format!("/v1/tasks/{id}/extend"), json!({"lease": lease, "lease_ms": 100}))
        .assert_error(409, "not_leased");
}

// ---------------------------------------------------------------- error table

#[test]
fn invalid_argument_names_the_field() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.post("/v1/queues/q/tasks", json!({"priority": 1})).assert_invalid("payload");
    client.post("/v1/queues/q/tasks", json!({"payload": 1, "priority": "high"})).assert_invalid("priority");
    client.post("/v1/queues/q/tasks", json!({"payload": 1, "priority": 2147483648u64})).assert_invalid("priority");
    client.post("/v1/queues/q/tasks", json!({"payload": 1, "colour": "red"})).assert_invalid("colour");
    client.post("/v1/queues/q/tasks", json!({"payload": 1, "max_attempts": 0})).assert_invalid("max_attempts");
    client.post("/v1/queues/q/tasks", json!({"payload": 1, "group": ""})).assert_invalid("group");
    client.post("/v1/queues/q/tasks", json!({"payload": 1, "depends_on": ["999999"]})).assert_invalid("depends_on");
    client.put("/v1/queues/q", json!({"discipline": "random"})).assert_invalid("discipline");
    client.put("/v1/queues/q", json!({"lease_ms": 0})).assert_invalid("lease_ms");
    client.put("/v1/queues/q", json!({"group_concurrency": 0})).assert_invalid("group_concurrency");
    client.put("/v1/queues/q", json!({"backoff_ms": 100, "backoff_max_ms": 50})).assert_invalid("backoff_max_ms");
    let long_name = "n".repeat(129);
    let too_long = client.put(&format!("/v1/queues/{long_name}"), json!({}));
    too_long.assert_error(413, "payload_too_large");
    assert_eq!(too_long.message(), "queue is too large: 129 bytes; the limit is 128 bytes");
    client.put("/v1/queues/bad!name", json!({})).assert_invalid("queue");
    let id = client.enqueue("q", json!({"payload": 1}));
    client.post(&format!("/v1/tasks/{id}/complete"), json!({})).assert_invalid("lease");
    client.post(&format!("/v1/tasks/{id}/fail"), json!({"lease": "1"})).assert_invalid("error");
    // After all those 400s, the same connection still works.
    assert_eq!(client.task(&id)["state"], "ready");
}

#[test]
fn unknown_path_is_not_found() {
    let server = Server::start(&[]);
    let mut client = server.client();
    for path in
        ["/", "/v1", "/v2/queues", "/v1/queue", "/v1/queues/q/tasks/batch/x", "/v1/tasks/1/finish", "/healthz/x"]
    {
        client.get(path).assert_error(404, "not_found");
    }
    client.post("/v1/nothing", json!({})).assert_error(404, "not_found");
    assert_eq!(client.get("/healthz").status, 200);
}

#[test]
fn wrong_method_is_405_with_allow() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let cases: &[(&str, &str, &[&str])] = &[
        ("POST", "/healthz", &["GET"]),
        ("DELETE", "/v1/queues", &["GET"]),
        ("POST", "/v1/queues/q", &["GET", "PUT", "DELETE"]),
        ("DELETE", "/v1/queues/q/tasks", &["GET", "POST"]),
        ("GET", "/v1/queues/q/tasks/batch", &["POST"]),
        ("GET", "/v1/tasks/1/retry", &["POST"]),
        ("PUT", "/v1/tasks/1/delete", &["POST"]),
        ("GET", "/v1/dequeue", &["POST"]),
        ("PUT", "/v1/tasks/1", &["GET", "DELETE"]),
        ("GET", "/v1/tasks/1/complete", &["POST"]),
        ("DELETE", "/v1/tasks/1/fail", &["POST"]),
        ("PUT", "/v1/tasks/1/extend", &["POST"]),
    ];
    for (method, path, allowed) in cases {
        let body = if *method == "GET" || *method == "DELETE" { None } else { Some(&b"{}"[..]) };
        let response = client.request_bytes(method, path, body);
        response.assert_error(405, "method_not_allowed");
        let allow = response.header("allow").unwrap_or_else(|| panic!("{method} {path}: no Allow header"));
        let listed: BTreeSet<String> = allow.split(',').map(|m| m.trim().to_string()).collect();
        let expected: BTreeSet<String> = allowed.iter().map(|m| m.to_string()).collect();
        // HEAD may be listed alongside GET; nothing else.
        let listed_without_head: BTreeSet<String> = listed.iter().filter(|m| *m != "HEAD").cloned().collect();
        assert_eq!(listed_without_head, expected, "{method} {path}: Allow {allow:?}");
    }
    assert_eq!(client.get("/healthz").status, 200);
}

#[test]
fn wrong_lease_is_lease_mismatch() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let id = client.enqueue("q", json!({"payload": 1}));
    let (_, lease) = lease_one(&mut client, "q");
    let wrong = (lease.parse::<u64>().unwrap() ^ 1).to_string();
    client.post(&format!("/v1/tasks/{id}/complete"), json!({"lease": wrong})).assert_error(409, "lease_mismatch");
    client
        .post(&format!("/v1/tasks/{id}/fail"), json!({"lease": wrong, "error": "x"}))
        .assert_error(409, "lease_mismatch");
    client
        .post(&format!("/v1/tasks/{id}/extend"), json!({"lease": wrong, "lease_ms": 100}))
        .assert_error(409, "lease_mismatch");
    // The right lease still works, on the same connection.
    assert_eq!(client.post(&format!("/v1/tasks/{id}/complete"), json!({"lease": lease})).status, 200);
}

#[test]
fn not_leased_for_a_ready_task() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let id = client.enqueue("q", json!({"payload": 1}));
    client.post(&format!("/v1/tasks/{id}/complete"), json!({"lease": "12345"})).assert_error(409, "not_leased");
}

#[test]
fn complete_after_the_lease_ran_out_is_refused() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.create_queue("q", json!({"backoff_ms": 60000, "backoff_max_ms": 60000}));
    let id = client.enqueue("q", json!({"payload": 1}));
    let tasks = client.post("/v1/dequeue", json!({"queues": ["q"], "lease_ms": 1})).body["tasks"].clone();
    let lease = tasks[0]["lease"].as_str().unwrap().to_string();
    thread::sleep(Duration::from_millis(50));
    let response = client.post(&format!("/v1/tasks/{id}/complete"), json!({"lease": lease}));
    // `lease_expired` before the server's tick has handled the expiry, `not_leased` after.
    assert_eq!(response.status, 409, "{response:?}");
    assert!(matches!(response.code(), "lease_expired" | "not_leased"), "{response:?}");
    let task = client.task(&id);
    assert_eq!(task["state"], "delayed");
    assert_eq!(task["error"], "lease expired");
}

#[test]
fn chunked_body_is_411_and_closes() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let request = b"POST /v1/queues/q/tasks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                    10\r\n{\"payload\": 1}  \r\n0\r\n\r\n";
    let response = client.send_raw_and_read(request.to_vec()).expect("a 411 response");
    response.assert_error(411, "length_required");
    client.assert_closed(Duration::from_secs(5));
    server.assert_healthy();
}

#[test]
fn body_over_max_body_bytes_is_413_and_closes() {
    let server = Server::start(&["--max-body-bytes", "1024"]);
    let mut client = server.client();
    // Exactly at the limit is accepted.
    let prefix = r#"{"payload": ""#;
    let at_limit = format!("{prefix}{}\"}}", "x".repeat(1024 - prefix.len() - 2));
    assert_eq!(at_limit.len(), 1024);
    let response = client.request_bytes("POST", "/v1/queues/q/tasks", Some(at_limit.as_bytes()));
    assert_eq!(response.status, 201, "{response:?}");
    // One byte over it is not.
    let over = format!("{prefix}{}\"}}", "x".repeat(1025 - prefix.len() - 2));
    let request = support::request_bytes("POST", "/v1/queues/q/tasks", Some(over.as_bytes()));
    let response = client.send_raw_and_read(request).expect("a 413 response");
    response.assert_error(413, "payload_too_large");
    client.assert_closed(Duration::from_secs(5));
    // Far over it, too.
    let mut client = server.client();
    let big = format!("{prefix}{}\"}}", "x".repeat(200_000));
    let request = support::request_bytes("POST", "/v1/queues/q/tasks", Some(big.as_bytes()));
    client.send_raw_and_read(request).expect("a 413 response").assert_error(413, "payload_too_large");
    client.assert_closed(Duration::from_secs(5));
    server.assert_healthy();
    let mut client = server.client();
    assert_eq!(client.queue_counts("q")["ready"], 1, "only the request at the limit was enqueued");
}

#[test]
fn headers_over_16_kib_are_431_and_close() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(20 * 1024));
    let response = client.send_raw_and_read(request.into_bytes()).expect("a 431 response");
    response.assert_error(431, "headers_too_large");
    client.assert_closed(Duration::from_secs(5));
    server.assert_healthy();
}

#[test]
fn more_than_64_headers_are_431_and_close() {
    let server = Server::start(&[]);
    // 64 headers in all (with Host) are fine.
    let mut client = server.client();
    let mut request = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..63 {
        request.push_str(&format!("X-H{i}: v\r\n"));
    }
    request.push_str("\r\n");
    client.send_raw(request.as_bytes());
    let response = client.read_response().expect("a response");
    assert_eq!(response.status, 200, "64 headers: {response:?}");
    // 65 are not.
    let mut request = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..64 {
        request.push_str(&format!("X-H{i}: v\r\n"));
    }
    request.push_str("\r\n");
    let response = client.send_raw_and_read(request.into_bytes()).expect("a 431 response");
    response.assert_error(431, "headers_too_large");
    client.assert_closed(Duration::from_secs(5));
    server.assert_healthy();
}

// ---------------------------------------------------------------- connections

#[test]
fn connection_close_closes_after_the_reply() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.send_raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let response = client.read_response().expect("a response");
    assert_eq!(response.status, 200);
    client.assert_closed(Duration::from_secs(5));
}

#[test]
fn http_1_0_closes_unless_keep_alive() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.send_raw(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(client.read_response().expect("a response").status, 200);
    client.send_raw(b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!(client.read_response().expect("a response").status, 200);
    client.assert_closed(Duration::from_secs(5));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let mut bytes = Vec::new();
    bytes.extend(json_request("PUT", "/v1/queues/p", &json!({"discipline": "lifo"})));
    for i in 0..5 {
        bytes.extend(json_request("POST", "/v1/queues/p/tasks", &json!({"payload": i})));
    }
    bytes.extend(support::request_bytes("GET", "/v1/queues/p", None));
    bytes.extend(json_request("POST", "/v1/dequeue", &json!({"queues": ["p"], "max": 5})));
    bytes.extend(support::request_bytes("GET", "/nope", None));
    bytes.extend(support::request_bytes("GET", "/healthz", None));
    client.send_raw(&bytes);
    assert_eq!(client.read_response().unwrap().status, 200);
    let mut last = 0;
    for _ in 0..5 {
        let response = client.read_response().unwrap();
        assert_eq!(response.status, 201);
        let id = as_id(&response.body["id"]);
        assert!(id > last);
        last = id;
    }
    assert_eq!(client.read_response().unwrap().body["counts"]["ready"], 5);
    let dequeued = client.read_response().unwrap();
    assert_eq!(
        payloads(dequeued.body["tasks"].as_array().unwrap()),
        vec![json!(4), json!(3), json!(2), json!(1), json!(0)]
    );
    client.read_response().unwrap().assert_error(404, "not_found");
    assert_eq!(client.read_response().unwrap().body, json!({"status": "ok"}));
}

// ---------------------------------------------------------------- disciplines

fn drain_order(client: &mut Client, queue: &str) -> Vec<Value> {
    let mut order = Vec::new();
    loop {
        let tasks = client.dequeue(&[queue], 1);
        if tasks.is_empty() {
            return order;
        }
        order.extend(payloads(&tasks));
    }
}

#[test]
fn fifo_serves_oldest_first() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.create_queue("q", json!({"discipline": "fifo"}));
    for (i, priority) in [1, 9, 5].iter().enumerate() {
        client.enqueue("q", json!({"payload": i, "priority": priority}));
    }
    assert_eq!(drain_order(&mut client, "q"), vec![json!(0), json!(1), json!(2)]);
}

#[test]
fn lifo_serves_newest_first() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.create_queue("q", json!({"discipline": "lifo"}));
    for i in 0..4 {
        client.enqueue("q", json!({"payload": i}));
    }
    assert_eq!(drain_order(&mut client, "q"), vec![json!(3), json!(2), json!(1), json!(0)]);
}

#[test]
fn priority_serves_highest_first_then_oldest() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.create_queue("q", json!({"discipline": "priority"}));
    for (name, priority) in [("a", 1), ("b", 5), ("c", -3), ("d", 5), ("e", 3)] {
        client.enqueue("q", json!({"payload": name, "priority": priority}));
    }
    let all = client.dequeue(&["q"], 10);
    assert_eq!(payloads(&all), vec![json!("b"), json!("d"), json!("e"), json!("a"), json!("c")]);
}

#[test]
fn round_robin_takes_turns_across_groups() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.create_queue("q", json!({"discipline": "round_robin"}));
    for (name, group) in [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("b2", "b"), ("c1", "c")] {
        client.enqueue("q", json!({"payload": name, "group": group}));
    }
    let order = drain_order(&mut client, "q");
    assert_eq!(order, vec![json!("a1"), json!("b1"), json!("c1"), json!("a2"), json!("b2"), json!("a3")]);
}

#[test]
fn group_concurrency_one_serves_a_group_in_order_one_at_a_time() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.create_queue("q", json!({"group_concurrency": 1, "backoff_ms": 60000, "backoff_max_ms": 60000}));
    let g1a = client.enqueue("q", json!({"payload": "g1a", "group": "g1"}));
    let g1b = client.enqueue("q", json!({"payload": "g1b", "group": "g1"}));
    let g2a = client.enqueue("q", json!({"payload": "g2a", "group": "g2"}));
    let free = client.enqueue("q", json!({"payload": "free"}));
    let first = client.dequeue(&["q"], 10);
    assert_eq!(ids(&first), vec![g1a.clone(), g2a, free], "one task per group; ungrouped tasks are not limited");
    assert!(client.dequeue(&["q"], 10).is_empty(), "g1b waits for g1a");
    // A retry backoff keeps the slot: g1b cannot overtake g1a.
    let lease = first[0]["lease"].as_str().unwrap();
    let failed = client.post(&format!("/v1/tasks/{g1a}/fail"), json!({"lease": lease, "error": "retry me"}));
    assert_eq!(failed.body["state"], "delayed");
    assert!(client.dequeue(&["q"], 10).is_empty(), "g1a's backoff holds the slot");
    // Cancelling g1a frees the slot; g1b is next.
    assert_eq!(client.delete(&format!("/v1/tasks/{g1a}")).status, 200);
    assert_eq!(ids(&client.dequeue(&["q"], 10)), vec![g1b]);
}

// ---------------------------------------------------------------- dependencies

#[test]
fn dependency_across_queues_waits_then_becomes_ready() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let parent = client.enqueue("a", json!({"payload": "parent"}));
    let response = client.post("/v1/queues/b/tasks", json!({"payload": "child", "depends_on": [parent]}));
    assert_eq!(response.status, 201);
    assert_eq!(response.body["state"], "waiting");
    let child = response.body["id"].as_str().unwrap().to_string();
    let task = client.task(&child);
    assert_eq!(task["state"], "waiting");
    assert_eq!(task["depends_on"], json!([parent]));
    assert_eq!(task["not_before_ms"], task["created_at_ms"]);
    assert!(client.dequeue(&["b"], 10).is_empty());
    let (id, lease) = lease_one(&mut client, "a");
    assert_eq!(id, parent);
    assert!(client.dequeue(&["b"], 10).is_empty(), "still waiting while the parent is leased");
    assert_eq!(client.post(&format!("/v1/tasks/{id}/complete"), json!({"lease": lease})).status, 200);
    assert_eq!(client.task(&child)["state"], "ready");
    assert_eq!(ids(&client.dequeue(&["b"], 10)), vec![child]);
}

#[test]
fn dependents_are_cancelled_transitively_when_the_parent_dies() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let parent = client.enqueue("a", json!({"payload": "parent", "max_attempts": 1}));
    let child = client.enqueue("b", json!({"payload": "child", "depends_on": [parent]}));
    let grandchild = client.enqueue("c", json!({"payload": "grandchild", "depends_on": [child]}));
    let (_, lease) = lease_one(&mut client, "a");
    let response = client.post(&format!("/v1/tasks/{parent}/fail"), json!({"lease": lease, "error": "fatal"}));
    assert_eq!(response.body, json!({"id": parent, "state": "dead"}));
    let child_task = client.task(&child);
    assert_eq!(child_task["state"], "cancelled");
    assert_eq!(child_task["error"], json!(format!("dependency {parent} is dead")));
    let grandchild_task = client.task(&grandchild);
    assert_eq!(grandchild_task["state"], "cancelled");
    assert_eq!(grandchild_task["error"], json!(format!("dependency {child} is cancelled")));
    assert!(client.dequeue(&["b", "c"], 10).is_empty());
    // A new task on a dead dependency is created cancelled.
    let late = client.post("/v1/queues/b/tasks", json!({"payload": "late", "depends_on": [parent]}));
    assert_eq!(late.status, 201);
    assert_eq!(late.body["state"], "cancelled");
}

// ---------------------------------------------------------------- leases and long polls

#[test]
fn expired_lease_is_redelivered_with_attempt_2() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.create_queue("q", json!({"lease_ms": 200, "backoff_ms": 0, "backoff_max_ms": 0}));
    let id = client.enqueue("q", json!({"payload": "job"}));
    let first = client.dequeue(&["q"], 1);
    assert_eq!(ids(&first), vec![id.clone()]);
    assert_eq!(first[0]["attempt"], 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    let again = loop {
        let tasks = client.dequeue(&["q"], 1);
        if let Some(task) = tasks.first() {
            break task.clone();
        }
        assert!(Instant::now() < deadline, "the task was not redelivered within 5 s");
        thread::sleep(Duration::from_millis(25));
    };
    assert_eq!(again["id"], json!(id));
    assert_eq!(again["attempt"], 2);
    assert_ne!(again["lease"], first[0]["lease"]);
    // The old lease is now stale, the new one works.
    client
        .post(&format!("/v1/tasks/{id}/complete"), json!({"lease": first[0]["lease"]}))
        .assert_error(409, "lease_mismatch");
    let done = client.post(&format!("/v1/tasks/{id}/complete"), json!({"lease": again["lease"]}));
    assert_eq!(done.status, 200);
    let task = client.task(&id);
    assert_eq!(task["attempts"], 2);
    assert_eq!(task["state"], "completed");
}

#[test]
fn long_poll_is_woken_by_an_enqueue() {
    let server = Server::start(&[]);
    // A worker that may start first creates its queue (a dequeue of a queue
    // that does not exist is refused).
    server.client().create_queue("jobs", json!({}));
    let addr = server.addr;
    let waiter = thread::spawn(move || {
        let mut client = Client::connect(addr);
        let start = Instant::now();
        let response = client.post("/v1/dequeue", json!({"queues": ["jobs"], "wait_ms": 5000}));
        (response, start.elapsed())
    });
    thread::sleep(Duration::from_millis(100));
    let mut client = server.client();
    let id = client.enqueue("jobs", json!({"payload": "wake up"}));
    let (response, elapsed) = waiter.join().unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    let tasks = response.body["tasks"].as_array().unwrap();
    assert_eq!(ids(tasks), vec![id]);
    assert_eq!(tasks[0]["payload"], "wake up");
    assert!(elapsed < Duration::from_millis(4000), "the long poll waited its full time: {elapsed:?}");
}

#[test]
fn long_poll_times_out_with_no_tasks() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.create_queue("empty", json!({}));
    let start = Instant::now();
    let response = client.post("/v1/dequeue", json!({"queues": ["empty"], "wait_ms": 200}));
    let elapsed = start.elapsed();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, json!({"tasks": []}));
    assert!(elapsed >= Duration::from_millis(150), "returned before its wait: {elapsed:?}");
    // The connection is usable afterwards.
    assert_eq!(client.get("/healthz").status, 200);
}

/// A held long poll whose queue is deleted is answered `404 queue_not_found`
/// then, not with an empty list at its deadline.
#[test]
fn long_poll_on_a_queue_deleted_while_it_waits_is_told_so() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.create_queue("doomed", json!({}));
    let addr = server.addr;
    let waiter = thread::spawn(move || {
        let start = Instant::now();
        let response = Client::connect(addr).post("/v1/dequeue", json!({"queues": ["doomed"], "wait_ms": 60000}));
        (response, start.elapsed())
    });
    thread::sleep(Duration::from_millis(100));
    assert_eq!(client.delete("/v1/queues/doomed").status, 200);
    let (response, elapsed) = waiter.join().unwrap();
    response.assert_error(404, "queue_not_found");
    assert!(elapsed < Duration::from_secs(50), "the long poll waited its full time: {elapsed:?}");
}

#[test]
fn abandoned_long_poll_does_not_take_tasks() {
    // A client that long-polls and then hangs up must not be handed the next task
    // (it would sit leased to nobody until its lease expires). src/server/worker.rs
    // states this intent: held polls "whose client is gone" are dropped "so they
    // cannot take tasks nobody will receive".
    let server = Server::start(&[]);
    server.client().create_queue("lp", json!({}));
    let mut gone = server.client();
    gone.send_raw(&json_request("POST", "/v1/dequeue", &json!({"queues": ["lp"], "wait_ms": 3000})));
    thread::sleep(Duration::from_millis(100));
    drop(gone);
    thread::sleep(Duration::from_millis(100));
    let mut client = server.client();
    let id = client.enqueue("lp", json!({"payload": "for a live consumer"}));
    let response = client.post("/v1/dequeue", json!({"queues": ["lp"], "wait_ms": 1000}));
    let tasks = response.body["tasks"].as_array().unwrap();
    assert_eq!(ids(tasks), vec![id.clone()], "the task went to the client that hung up: {}", client.task(&id));
}

#[test]
fn long_poll_is_woken_when_a_cancel_frees_a_group_slot() {
    // With group_concurrency 1, cancelling the leased task of a group makes the
    // group's next task ready: a held long poll gets it.
    let server = Server::start(&[]);
    let mut client = server.client();
    client.create_queue("gc", json!({"group_concurrency": 1}));
    let first = client.enqueue("gc", json!({"payload": "first", "group": "g"}));
    let second = client.enqueue("gc", json!({"payload": "second", "group": "g"}));
    assert_eq!(ids(&client.dequeue(&["gc"], 10)), vec![first.clone()]);
    let addr = server.addr;
    let waiter = thread::spawn(move || {
        let mut client = Client::connect(addr);
        let start = Instant::now();
        let response = client.post("/v1/dequeue", json!({"queues": ["gc"], "wait_ms": 3000}));
        (response, start.elapsed())
    });
    thread::sleep(Duration::from_millis(100));
    assert_eq!(client.delete(&format!("/v1/tasks/{first}")).status, 200);
    let (response, elapsed) = waiter.join().unwrap();
    assert_eq!(ids(response.body["tasks"].as_array().unwrap()), vec![second], "{response:?}");
    assert!(elapsed < Duration::from_millis(2500), "the long poll waited its full time: {elapsed:?}");
}

#[test]
fn long_poll_is_woken_when_a_dependency_completes() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let parent = client.enqueue("parents", json!({"payload": "parent"}));
    let child = client.enqueue("children", json!({"payload": "child", "depends_on": [parent]}));
    let (_, lease) = lease_one(&mut client, "parents");
    let addr = server.addr;
    let waiter = thread::spawn(move || {
        let mut client = Client::connect(addr);
        let start = Instant::now();
        let response = client.post("/v1/dequeue", json!({"queues": ["children"], "wait_ms": 3000}));
        (response, start.elapsed())
    });
    thread::sleep(Duration::from_millis(100));
    assert_eq!(client.post(&format!("/v1/tasks/{parent}/complete"), json!({"lease": lease})).status, 200);
    let (response, elapsed) = waiter.join().unwrap();
    assert_eq!(ids(response.body["tasks"].as_array().unwrap()), vec![child], "{response:?}");
    assert!(elapsed < Duration::from_millis(2500), "the long poll waited its full time: {elapsed:?}");
}

#[test]
fn long_poll_is_woken_when_a_delay_ends() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let id = client.enqueue("later", json!({"payload": 1, "delay_ms": 300}));
    let start = Instant::now();
    let response = client.post("/v1/dequeue", json!({"queues": ["later"], "wait_ms": 3000}));
    let elapsed = start.elapsed();
    assert_eq!(ids(response.body["tasks"].as_array().unwrap()), vec![id], "{response:?}");
    assert!(elapsed < Duration::from_millis(2500), "the long poll waited its full time: {elapsed:?}");
}

#[test]
fn long_poll_does_not_block_its_connection_peers() {
    // Requests on other connections are served while one is held.
    let server = Server::start(&[]);
    server.client().create_queue("idle", json!({}));
    let addr = server.addr;
    let waiter = thread::spawn(move || {
        let mut client = Client::connect(addr);
        client.post("/v1/dequeue", json!({"queues": ["idle"], "wait_ms": 1500}))
    });
    thread::sleep(Duration::from_millis(50));
    let mut client = server.client();
    let start = Instant::now();
    for _ in 0..20 {
        assert_eq!(client.get("/healthz").status, 200);
        client.enqueue("busy", json!({"payload": 1}));
    }
    assert!(start.elapsed() < Duration::from_millis(1000), "others were held up: {:?}", start.elapsed());
    assert_eq!(waiter.join().unwrap().body, json!({"tasks": []}));
}

// ---------------------------------------------------------------- concurrency

#[test]
fn two_hundred_connections_pipelining_enqueues() {
    const CONNECTIONS: usize = 200;
    const PER_CONNECTION: usize = 10;
    let server = Server::start(&[]);
    let addr = server.addr;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CONNECTIONS));
    let handles: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut client = Client::connect(addr);
                let mut bytes = Vec::new();
                for i in 0..PER_CONNECTION {
                    bytes.extend(json_request("POST", "/v1/queues/many/tasks", &json!({"payload": [c, i]})));
                }
                barrier.wait();
                client.stream.write_all(&bytes).unwrap();
                let mut last = 0;
                let mut ids = Vec::new();
                for i in 0..PER_CONNECTION {
                    let response = client.read_response().unwrap_or_else(|e| panic!("conn {c} response {i}: {e:?}"));
                    assert_eq!(response.status, 201, "conn {c} response {i}: {response:?}");
                    let id = as_id(&response.body["id"]);
                    assert!(id > last, "conn {c}: ids increase in request order");
                    last = id;
                    ids.push(id);
                }
                ids
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for handle in handles {
        for id in handle.join().unwrap() {
            assert!(all.insert(id), "id {id} given twice");
        }
    }
    assert_eq!(all.len(), CONNECTIONS * PER_CONNECTION);
    let mut client = server.client();
    assert_eq!(client.queue_counts("many")["ready"], json!(CONNECTIONS * PER_CONNECTION));
}

// ---------------------------------------------------------------- 503 and stopping

#[test]
fn full_request_queue_is_503_overloaded_with_retry_after() {
    // A request queue of one: a burst of pipelined requests overflows it at once.
    let server = Server::start(&["--queue-capacity", "1"]);
    let mut client = server.client();
    let mut bytes = Vec::new();
    for i in 0..200 {
        bytes.extend(json_request("POST", "/v1/queues/burst/tasks", &json!({"payload": i})));
    }
    client.send_raw(&bytes);
    let (mut created, mut overloaded) = (0, 0);
    for i in 0..200 {
        let response = client.read_response().unwrap_or_else(|e| panic!("response {i}: {e:?}"));
        match response.status {
            201 => created += 1,
            _ => {
                response.assert_error(503, "overloaded");
                let retry_after =
                    response.header("retry-after").unwrap_or_else(|| panic!("no Retry-After: {response:?}"));
                assert!(retry_after.parse::<u64>().is_ok(), "Retry-After is whole seconds: {response:?}");
                overloaded += 1;
            }
        }
    }
    assert!(overloaded > 0, "a queue of one never overflowed under 200 pipelined requests");
    // The connection stays open after a 503, and only the accepted requests took effect.
    assert_eq!(client.get("/healthz").status, 200);
    assert_eq!(client.queue_counts("burst")["ready"], json!(created));
}

#[test]
fn engine_at_its_queue_limit_is_503_capacity_exceeded() {
    // The engine holds at most 10,000 queues by default.
    let server = Server::start(&[]);
    let mut client = server.client();
    let mut bytes = Vec::new();
    for i in 0..10_001 {
        bytes.extend(support::request_bytes("PUT", &format!("/v1/queues/q{i}"), Some(b"")));
    }
    let mut writer = client.stream.try_clone().unwrap();
    let write = thread::spawn(move || writer.write_all(&bytes).unwrap());
    for i in 0..10_000 {
        let response = client.read_response().unwrap_or_else(|e| panic!("response {i}: {e:?}"));
        assert_eq!(response.status, 200, "queue {i}: {response:?}");
    }
    write.join().unwrap();
    let last = client.read_response().expect("the 10,001st answer");
    last.assert_error(503, "capacity_exceeded");
    // The connection stays open; existing queues still work.
    let id = client.enqueue("q0", json!({"payload": 1}));
    assert_eq!(ids(&client.dequeue(&["q0"], 1)), vec![id]);
}

#[test]
fn sigterm_answers_held_long_polls_and_exits() {
    // Stopping finishes the requests in flight: a held long poll is answered at
    // once (empty, or 503 shutting_down), not held to its deadline or dropped.
    let mut server = Server::start(&[]);
    server.client().create_queue("never", json!({}));
    let addr = server.addr;
    let waiter = thread::spawn(move || {
        let mut client = Client::connect(addr);
        client.set_read_timeout(Duration::from_secs(20));
        client.send_raw(&json_request("POST", "/v1/dequeue", &json!({"queues": ["never"], "wait_ms": 30000})));
        let response = client.read_response();
        (response, Instant::now())
    });
    thread::sleep(Duration::from_millis(200));
    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    let (response, answered) = waiter.join().unwrap();
    let response = response
        .unwrap_or_else(|e| panic!("the held long poll got no answer ({e:?}) {:?} after SIGTERM", signalled.elapsed()));
    if response.status == 200 {
        assert_eq!(response.body, json!({"tasks": []}));
    } else {
        response.assert_error(503, "shutting_down");
    }
    let waited = answered - signalled;
    assert!(waited < Duration::from_secs(5), "the long poll was answered {waited:?} after SIGTERM");
    let status = server.wait_exit(Duration::from_secs(15)).expect("the server exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}; stderr:\n{}", server.stderr());
}

#[test]
fn post_without_content_length_is_refused() {
    // A POST that needs a body but frames none: 411 (or a 400 for the empty body).
    let server = Server::start(&[]);
    let mut client = server.client();
    client.send_raw(b"POST /v1/dequeue HTTP/1.1\r\nHost: x\r\n\r\n");
    let response = client.read_response().expect("an answer");
    assert!(matches!(response.status, 411 | 400), "{response:?}");
    if response.status == 411 {
        response.assert_error(411, "length_required");
        client.assert_closed(Duration::from_secs(5));
    }
    server.assert_healthy();
}
