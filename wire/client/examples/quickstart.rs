//! Enqueue a task with an idempotency key, lease it, complete it, printing each
//! step. Against a running server (`tools/run serve`, which listens for the
//! binary protocol on 127.0.0.1:7701):
//!
//! ```sh
//! cargo run --release -p tqx-client --example quickstart            # 127.0.0.1:7701
//! cargo run --release -p tqx-client --example quickstart -- HOST:PORT
//! ```

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tqx_client::{Client, ClientError, ClientOptions, TaskSpec, DEFAULT_ADDR};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let addr = std::env::args().nth(1).unwrap_or_else(|| DEFAULT_ADDR.to_string());
    match run(&addr).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("quickstart: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(addr: &str) -> Result<(), ClientError> {
    // Fail fast when nothing listens: 3 attempts instead of the default 10.
    let options = ClientOptions { reconnect_attempts_max: 3, ..ClientOptions::default() };
    let client = Client::connect(addr, options).await?;
    println!("connected to {addr}");

    // A key unique to this run: enqueueing it again (as the client does by itself
    // if the connection drops before the reply) returns this task, not a new one.
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let key = format!("quickstart-{now_ms}");
    let task = TaskSpec {
        payload: Bytes::from(format!(r#"{{"greeting":"hello","run":{now_ms}}}"#)),
        key: Some(key.clone()),
        ..TaskSpec::default()
    };
    let enqueued = client.enqueue("quickstart", task).await?;
    println!("enqueued task {} with key {key}: {:?}", enqueued.id, enqueued.state);

    // Wait up to 1 s for a ready task. The queue is FIFO, so a task left over by an
    // earlier, interrupted run comes first; complete whatever we are given.
    let leased = client.dequeue(&["quickstart"], 1, Some(30_000), 1_000).await?;
    let Some(task) = leased.into_iter().next() else {
        println!("nothing to lease (another worker took it?)");
        return Ok(());
    };
    println!(
        "leased task {} (attempt {}, lease {} until {} ms): {}",
        task.id,
        task.attempt,
        task.lease,
        task.lease_expires_at_ms,
        String::from_utf8_lossy(&task.payload)
    );

    let state = client.complete(task.id, task.lease, Some(Bytes::from_static(br#"{"ok":true}"#))).await?;
    println!("completed task {}: {state:?}", task.id);

    let view = client.get_task(task.id).await?;
    println!(
        "task {} is {:?} after {} attempt(s), result {}",
        view.id,
        view.state,
        view.attempts,
        view.result.as_deref().map_or("none".into(), String::from_utf8_lossy)
    );
    Ok(())
}
