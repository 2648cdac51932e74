//! `tqx demo`: a scripted tour of the queue engine on a simulated clock.

use std::process::ExitCode;

use bytes::Bytes;

use crate::engine::{DepRef, Discipline, Engine, EngineConfig, EngineError, NewTask, QueueConfigPatch, TaskState};

/// Runs the tour and prints each step; an engine error (a bug in the script)
/// is printed with its code and exits 1.
pub(super) fn run() -> ExitCode {
    match demo() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tqx demo: {error} ({})", error.code());
            ExitCode::FAILURE
        }
    }
}

fn payload(text: &'static str) -> Bytes {
    Bytes::from_static(text.as_bytes())
}

/// Walks through priorities, leases, a retry, and a dependency, with time passed
/// in by hand: the engine never reads a clock.
fn demo() -> Result<(), EngineError> {
    let mut engine = Engine::new(EngineConfig::default());
    let mut now_ms = 0;
    let patch =
        QueueConfigPatch { discipline: Some(Discipline::Priority), backoff_ms: Some(100), ..Default::default() };
    engine.configure_queue("orders", &patch, now_ms)?;
    println!("t={now_ms}ms  queue orders: priority, backoff 100 ms");

    let routine = engine.enqueue("orders", NewTask { payload: payload("rebalance"), ..Default::default() }, now_ms)?;
    let urgent = engine.enqueue(
        "orders",
        NewTask { payload: payload("cancel-order 17"), priority: 10, ..Default::default() },
        now_ms,
    )?;
    let report =
        NewTask { payload: payload("send report"), depends_on: vec![DepRef::Task(routine.id)], ..Default::default() };
    let report = engine.enqueue("reports", report, now_ms)?;
    println!(
        "t={now_ms}ms  enqueued #{} (priority 0), #{} (priority 10), #{} in reports waiting on #{}",
        routine.id, urgent.id, report.id, routine.id
    );

    let mut leased = Vec::new();
    engine.dequeue(&["orders"], 2, Some(1_000), now_ms, &mut leased)?;
    for task in &leased {
        println!(
            "t={now_ms}ms  leased #{} {:?} attempt {} until {}ms",
            task.id,
            String::from_utf8_lossy(&task.payload),
            task.attempt,
            task.lease_expires_at_ms
        );
    }
    now_ms += 5;
    engine.complete(leased[0].id, leased[0].lease, Some(payload("ok")), now_ms)?;
    println!("t={now_ms}ms  completed #{}", leased[0].id);
    let state = engine.fail(leased[1].id, leased[1].lease, "exchange timeout", true, now_ms)?;
    let not_before_ms = engine.task(leased[1].id).and_then(|t| t.not_before_ms).unwrap_or(now_ms);
    println!("t={now_ms}ms  failed #{} -> {} until {not_before_ms}ms", leased[1].id, state.as_str());

    now_ms = not_before_ms;
    let tick = engine.tick(now_ms, 1_000);
    println!("t={now_ms}ms  tick: {} promoted", tick.promoted);
    leased.clear();
    engine.dequeue(&["orders"], 1, None, now_ms, &mut leased)?;
    let retry = &leased[0];
    println!("t={now_ms}ms  leased #{} again, attempt {}", retry.id, retry.attempt);
    engine.complete(retry.id, retry.lease, None, now_ms)?;
    println!("t={now_ms}ms  completed #{}; #{} is now {}", retry.id, report.id, state_of(&engine, report.id));

    for queue in engine.queues() {
        let counts: Vec<String> = TaskState::ALL
            .iter()
            .filter(|s| queue.counts.get(**s) > 0)
            .map(|s| format!("{} {}", queue.counts.get(*s), s.as_str()))
            .collect();
        println!("queue {:<8} {}", queue.name, counts.join(", "));
    }
    Ok(())
}

fn state_of(engine: &Engine, id: u64) -> &'static str {
    engine.task(id).map_or("gone", |t| t.state.as_str())
}
