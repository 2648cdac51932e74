//! Dead letters on the real server (issue 19, item 3): a queue's dead tasks
//! listed page by page with a cursor, retried and deleted, over HTTP, over the
//! binary protocol and through the CLI; the retry and the queue's own dead
//! retention survive a crash (log replay) and a clean restart (checkpoint).
//! The rules themselves are pinned by the engine's unit tests and the model
//! test; here they meet the protocols and the disk.

mod support;

use std::process::Command;

use serde_json::{json, Value};
use support::Server;
use tqx_client::{ClientError, ClientOptions, ErrorCode, TaskState};

/// Enqueues `count` tasks into `queue` (one attempt each) and fails each for
/// good with the error "boom N"; returns their ids in order.
fn bury(client: &mut support::Client, queue: &str, count: usize) -> Vec<String> {
    let ids: Vec<String> = (0..count).map(|n| client.enqueue(queue, json!({"payload": {"n": n}}))).collect();
    let leased = client.dequeue(&[queue], count as u64);
    assert_eq!(leased.len(), count);
    for (n, task) in leased.iter().enumerate() {
        let (id, lease) = (task["id"].as_str().unwrap(), task["lease"].as_str().unwrap());
        let failed =
            client.post(&format!("/v1/tasks/{id}/fail"), json!({"lease": lease, "error": format!("boom {n}")}));
        assert_eq!(failed.body, json!({"id": id, "state": "dead"}), "{failed:?}");
    }
    ids
}

fn page_ids(body: &Value) -> Vec<String> {
    body["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_string()).collect()
}

fn tqx(args: &[&str]) -> (i32, Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tqx")).args(args).env_remove("TQX_SERVER").output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let body = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (output.status.code().unwrap_or(-1), body, String::from_utf8(output.stderr).unwrap())
}

#[test]
fn dead_tasks_are_listed_retried_and_deleted_on_both_protocols_and_a_retry_survives_restarts() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let queue = client.create_queue("jobs", json!({"max_attempts": 1, "dead_retention_ms": 86_400_000}));
    assert_eq!(queue["config"]["dead_retention_ms"], 86_400_000);
    let ids = bury(&mut client, "jobs", 4);

    // HTTP: two pages of two, in id order, each task with what an operator needs.
    let first = client.get("/v1/queues/jobs/tasks?state=dead&limit=2");
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(page_ids(&first.body), ids[..2]);
    let task = &first.body["tasks"][0];
    assert_eq!((task["state"].clone(), task["payload"].clone()), (json!("dead"), json!({"n": 0})));
    assert_eq!((task["attempts"].clone(), task["max_attempts"].clone()), (json!(1), json!(1)));
    assert_eq!(task["error"], "boom 0");
    let died_at = task["updated_at_ms"].as_u64().unwrap();
    assert_eq!(task["purge_at_ms"].as_u64(), Some(died_at + 86_400_000));
    let cursor = first.body["next_cursor"].as_str().expect("more to come").to_string();
    let second = client.get(&format!("/v1/queues/jobs/tasks?state=dead&limit=2&cursor={cursor}"));
    assert_eq!((page_ids(&second.body), second.body["next_cursor"].clone()), (ids[2..].to_vec(), Value::Null));
    client.get("/v1/queues/nope/tasks?state=dead").assert_error(404, "queue_not_found");
    client.get("/v1/queues/jobs/tasks?state=dead&limit=0").assert_invalid("limit");

    // HTTP: retry one (twice: the second conflicts), delete another.
    let retried = client.post(&format!("/v1/tasks/{}/retry", ids[0]), json!({}));
    assert_eq!(retried.body, json!({"id": ids[0], "state": "ready"}), "{retried:?}");
    client.post(&format!("/v1/tasks/{}/retry", ids[0]), json!({})).assert_error(409, "task_not_dead");
    let deleted = client.post(&format!("/v1/tasks/{}/delete", ids[1]), json!({}));
    assert_eq!(deleted.body, json!({"id": ids[1], "deleted": true}), "{deleted:?}");
    client.get(&format!("/v1/tasks/{}", ids[1])).assert_error(404, "task_not_found");
    client.post(&format!("/v1/tasks/{}/delete", ids[0]), json!({})).assert_error(409, "task_not_finished");

    // Binary: the same listing (now ids 2 and 3), a retry and a refused delete.
    let binary = server.binary_addr.expect("a binary address").to_string();
    let connection = tqx_client::blocking::Client::connect(&binary, ClientOptions::default()).unwrap();
    let id = |n: usize| ids[n].parse::<u64>().unwrap();
    let (tasks, next) = connection.list_tasks("jobs", TaskState::Dead, 0, 10).unwrap();
    assert_eq!((tasks.iter().map(|t| t.id).collect::<Vec<_>>(), next), (vec![id(2), id(3)], None));
    assert_eq!(tasks[0].error.as_deref(), Some("boom 2"));
    assert_eq!(connection.retry_task(id(2)).unwrap(), TaskState::Ready);
    match connection.delete_task(id(2)) {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::TaskNotFinished),
        other => panic!("{other:?}"),
    }
    match connection.list_tasks("nope", TaskState::Dead, 0, 10) {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::QueueNotFound),
        other => panic!("{other:?}"),
    }
    drop(connection);

    // The CLI over HTTP: list, then delete the last dead task.
    let url = format!("http://{}", server.addr);
    let (status, listed, stderr) = tqx(&["tasks", "jobs", "--json", "--server", &url]);
    assert_eq!((status, page_ids(&listed)), (0, vec![ids[3].clone()]), "{stderr}");
    let (status, body, stderr) = tqx(&["delete", &ids[3], "--server", &url]);
    assert_eq!((status, body), (0, json!({"id": ids[3], "deleted": true})), "{stderr}");
    let (status, _, stderr) = tqx(&["retry", &ids[3], "--server", &url]);
    assert_eq!(status, 3, "a task that is gone: exit 3, not found: {stderr}");
    assert!(stderr.contains("task_not_found"), "{stderr}");

    // Crash (the log replays the retries and deletes), then stop cleanly (a
    // checkpoint holds them): each time the same state.
    let expect = |client: &mut support::Client| {
        for n in [0, 2] {
            let task = client.task(&ids[n]);
            assert_eq!((task["state"].clone(), task["attempts"].clone()), (json!("ready"), json!(0)), "{task}");
        }
        for n in [1, 3] {
            client.get(&format!("/v1/tasks/{}", ids[n])).assert_error(404, "task_not_found");
        }
        let listed = client.get("/v1/queues/jobs/tasks?state=dead");
        assert_eq!(listed.body, json!({"tasks": [], "next_cursor": null}));
        assert_eq!(client.get("/v1/queues/jobs").body["config"]["dead_retention_ms"], 86_400_000);
    };
    let server = server.crash_and_restart(&[]);
    expect(&mut server.client());
    let server = server.stop_and_restart(&[]);
    let mut client = server.client();
    expect(&mut client);

    // A retried task runs again, from attempt 1.
    let leased = client.dequeue(&["jobs"], 1);
    assert_eq!((leased[0]["id"].as_str(), leased[0]["attempt"].clone()), (Some(ids[0].as_str()), json!(1)));
    server.assert_healthy();
}
