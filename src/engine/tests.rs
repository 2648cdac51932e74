//! Unit tests, one per rule of docs/engine.md, named for the behaviour they pin.
//! Time is the `now` argument: no test sleeps.

use bytes::Bytes;

use super::*;

fn engine() -> Engine {
    Engine::new(EngineConfig { seed: 42, ..EngineConfig::default() })
}

fn task(payload: &'static str) -> NewTask {
    NewTask { payload: Bytes::from_static(payload.as_bytes()), ..NewTask::default() }
}

fn configure(e: &mut Engine, queue: &str, patch: QueueConfigPatch) {
    e.configure_queue(queue, &patch, 0).expect("valid config");
}

fn enqueue(e: &mut Engine, queue: &str, t: NewTask, now: u64) -> TaskId {
    e.enqueue(queue, t, now).expect("valid enqueue").id
}

fn dequeue(e: &mut Engine, queues: &[&str], max: usize, now: u64) -> Vec<LeasedTask> {
    let mut out = Vec::new();
    e.dequeue(queues, max, None, now, &mut out).expect("valid dequeue");
    out
}

fn ids(leased: &[LeasedTask]) -> Vec<TaskId> {
    leased.iter().map(|t| t.id).collect()
}

fn state(e: &Engine, id: TaskId) -> TaskState {
    e.task(id).expect("task exists").state
}

fn checked(e: &Engine) {
    e.check_invariants().expect("invariants hold");
}

// ---- queues ---------------------------------------------------------------

#[test]
fn enqueue_to_unknown_queue_creates_it_as_fifo_with_defaults() {
    let mut e = engine();
    enqueue(&mut e, "jobs", task("a"), 0);
    let info = e.queue("jobs").unwrap();
    assert_eq!(info.config, QueueConfig::default());
    assert_eq!(info.config.discipline, Discipline::Fifo);
    assert_eq!(info.counts.get(TaskState::Ready), 1);
}

#[test]
fn configure_creates_then_updates_a_queue() {
    let mut e = engine();
    let patch = QueueConfigPatch { discipline: Some(Discipline::Lifo), lease_ms: Some(500), ..Default::default() };
    let config = e.configure_queue("q", &patch, 0).unwrap();
    assert_eq!((config.discipline, config.lease_ms, config.max_attempts), (Discipline::Lifo, 500, 3));
    let config = e.configure_queue("q", &QueueConfigPatch { max_attempts: Some(7), ..Default::default() }, 0).unwrap();
    assert_eq!((config.discipline, config.lease_ms, config.max_attempts), (Discipline::Lifo, 500, 7));
}

#[test]
fn configure_rejects_out_of_range_values_naming_the_field() {
    let mut e = engine();
    let cases: Vec<(QueueConfigPatch, &str)> = vec![
        (QueueConfigPatch { lease_ms: Some(0), ..Default::default() }, "lease_ms"),
        (QueueConfigPatch { max_attempts: Some(0), ..Default::default() }, "max_attempts"),
        (QueueConfigPatch { retention_ms: Some(u64::MAX), ..Default::default() }, "retention_ms"),
        (QueueConfigPatch { group_concurrency: Some(Some(0)), ..Default::default() }, "group_concurrency"),
        (QueueConfigPatch { backoff_ms: Some(10), backoff_max_ms: Some(5), ..Default::default() }, "backoff_max_ms"),
    ];
    for (patch, field) in cases {
        match e.configure_queue("q", &patch, 0) {
            Err(EngineError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected invalid, got {other:?}"),
        }
    }
    assert!(e.queue("q").is_none(), "a rejected configure creates nothing");
}

#[test]
fn queue_names_must_be_url_safe_and_bounded() {
    let mut e = engine();
    for bad in ["", "a/b", "sp ace", "ü"] {
        let err = e.enqueue(bad, task("a"), 0).unwrap_err();
        assert_eq!(err.code(), "invalid_argument", "{bad:?}");
    }
    let err = e.enqueue(&"x".repeat(129), task("a"), 0).unwrap_err();
    assert_eq!(err.code(), "payload_too_large", "{err}");
    enqueue(&mut e, "Orders-EU_1.v2:hi", task("a"), 0);
}

#[test]
fn queues_are_listed_in_name_order_with_counts() {
    let mut e = engine();
    enqueue(&mut e, "b", task("1"), 0);
    enqueue(&mut e, "a", task("2"), 0);
    enqueue(&mut e, "a", task("3"), 0);
    let list = e.queues();
    let names: Vec<&str> = list.iter().map(|q| &*q.name).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(list[0].counts.get(TaskState::Ready), 2);
}

#[test]
fn delete_queue_refuses_unfinished_tasks_unless_forced() {
    let mut e = engine();
    let a = enqueue(&mut e, "q", task("a"), 0);
    let dependent = enqueue(&mut e, "other", NewTask { depends_on: vec![DepRef::Task(a)], ..task("d") }, 0);
    assert_eq!(e.delete_queue("q", false, 0).unwrap_err().code(), "queue_not_empty");
    e.delete_queue("q", true, 0).unwrap();
    assert!(e.queue("q").is_none());
    assert!(e.task(a).is_none());
    let view = e.task(dependent).unwrap();
    assert_eq!(view.state, TaskState::Cancelled);
    assert_eq!(view.error.as_deref(), Some(&*format!("dependency {a} is cancelled")));
    assert_eq!(e.delete_queue("q", false, 0).unwrap_err().code(), "queue_not_found");
    checked(&e);
}

#[test]
fn delete_queue_without_unfinished_tasks_succeeds_and_forgets_finished_ones() {
    let mut e = engine();
    let a = enqueue(&mut e, "q", task("a"), 0);
    let l = dequeue(&mut e, &["q"], 1, 0);
    e.complete(a, l[0].lease, None, 1).unwrap();
    e.delete_queue("q", false, 2).unwrap();
    assert!(e.task(a).is_none());
    checked(&e);
}

// ---- serving order ---------------------------------------------------------

#[test]
fn fifo_serves_oldest_first() {
    let mut e = engine();
    let a = enqueue(&mut e, "q", task("a"), 0);
    let b = enqueue(&mut e, "q", task("b"), 0);
    let c = enqueue(&mut e, "q", task("c"), 0);
    assert_eq!(ids(&dequeue(&mut e, &["q"], 3, 1)), [a, b, c]);
}

#[test]
fn lifo_serves_newest_first() {
    let mut e = engine();
    configure(&mut e, "q", QueueConfigPatch { discipline: Some(Discipline::Lifo), ..Default::default() });
    let a = enqueue(&mut e, "q", task("a"), 0);
    let b = enqueue(&mut e, "q", task("b"), 0);
    let c = enqueue(&mut e, "q", task("c"), 0);
    assert_eq!(ids(&dequeue(&mut e, &["q"], 3, 1)), [c, b, a]);
}

#[test]
fn priority_serves_highest_first_and_fifo_among_equals() {
    let mut e = engine();
    configure(&mut e, "q", QueueConfigPatch { discipline: Some(Discipline::Priority), ..Default::default() });
    let low = enqueue(&mut e, "q", NewTask { priority: -5, ..task("low") }, 0);
    let mid1 = enqueue(&mut e, "q", task("mid1"), 0);
    let high = enqueue(&mut e, "q", NewTask { priority: i32::MAX, ..task("high") }, 0);
    let mid2 = enqueue(&mut e, "q", task("mid2"), 0);
    let lowest = enqueue(&mut e, "q", NewTask { priority: i32::MIN, ..task("lowest") }, 0);
    assert_eq!(ids(&dequeue(&mut e, &["q"], 5, 1)), [high, mid1, mid2, low, lowest]);
}

#[test]
fn round_robin_rotates_across_groups_fifo_within_each() {
    let mut e = engine();
    configure(&mut e, "q", QueueConfigPatch { discipline: Some(Discipline::RoundRobin), ..Default::default() });
    let a1 = enqueue(&mut e, "q", NewTask { group: Some("a".into()), ..task("a1") }, 0);
    let a2 = enqueue(&mut e, "q", NewTask { group: Some("a".into()), ..task("a2") }, 0);
    let a3 = enqueue(&mut e, "q", NewTask { group: Some("a".into()), ..task("a3") }, 0);
    let b1 = enqueue(&mut e, "q", NewTask { group: Some("b".into()), ..task("b1") }, 0);
    let n1 = enqueue(&mut e, "q", task("n1"), 0);
    let b2 = enqueue(&mut e, "q", NewTask { group: Some("b".into()), ..task("b2") }, 0);
    // Never-served groups first, by their oldest task; then least recently served.
    assert_eq!(ids(&dequeue(&mut e, &["q"], 6, 1)), [a1, b1, n1, a2, b2, a3]);
}

#[test]
fn round_robin_serves_a_returning_group_before_recently_served_ones() {
    let mut e = engine();
    configure(&mut e, "q", QueueConfigPatch { discipline: Some(Discipline::RoundRobin), ..Default::default() });
    let g = |name: &str, p: &'static str| NewTask { group: Some(name.into()), ..task(p) };
    let a1 = enqueue(&mut e, "q", g("a", "a1"), 0);
    let b1 = enqueue(&mut e, "q", g("b", "b1"), 0);
    assert_eq!(ids(&dequeue(&mut e, &["q"], 2, 0)), [a1, b1]);
    let b2 = enqueue(&mut e, "q", g("b", "b2"), 1);
    let a2 = enqueue(&mut e, "q", g("a", "a2"), 1);
    // a was served before b, so a goes first although b2 is older.
    assert_eq!(ids(&dequeue(&mut e, &["q"], 2, 2)), [a2, b2]);
}

#[test]
fn group_concurrency_one_processes_each_group_strictly_in_order() {
    let mut e = engine();
    configure(
        &mut e,
        "q",
        QueueConfigPatch { group_concurrency: Some(Some(1)), backoff_ms: Some(100), ..Default::default() },
    );
    let g = |name: &str, p: &'static str| NewTask { group: Some(name.into()), ..task(p) };
    let a1 = enqueue(&mut e, "q", g("a", "a1"), 0);
    let a2 = enqueue(&mut e, "q", g("a", "a2"), 0);
    let b1 = enqueue(&mut e, "q", g("b", "b1"), 0);
    let free = enqueue(&mut e, "q", task("ungrouped"), 0);
    let free2 = enqueue(&mut e, "q", task("ungrouped2"), 0);
    // One of each group, and ungrouped tasks are never limited.
    let first = dequeue(&mut e, &["q"], 10, 1);
    assert_eq!(ids(&first), [a1, b1, free, free2]);
    // a1 fails and waits out its backoff: a2 must not overtake it.
    assert_eq!(e.fail(a1, first[0].lease, "boom", true, 2).unwrap(), TaskState::Delayed);
    assert!(dequeue(&mut e, &["q"], 10, 3).is_empty());
    e.tick(1_000, usize::MAX);
    let again = dequeue(&mut e, &["q"], 10, 1_000);
    assert_eq!(ids(&again), [a1]);
    e.complete(a1, again[0].lease, None, 1_001).unwrap();
    assert_eq!(ids(&dequeue(&mut e, &["q"], 10, 1_002)), [a2]);
    checked(&e);
}

#[test]
fn group_concurrency_applies_under_priority() {
    let mut e = engine();
    configure(
        &mut e,
        "q",
        QueueConfigPatch {
            discipline: Some(Discipline::Priority),
            group_concurrency: Some(Some(2)),
            ..Default::default()
        },
    );
    let g = |p: i32| NewTask { group: Some("g".into()), priority: p, ..task("x") };
    let _low = enqueue(&mut e, "q", g(1), 0);
    let high = enqueue(&mut e, "q", g(9), 0);
    let mid = enqueue(&mut e, "q", g(5), 0);
    let other = enqueue(&mut e, "q", NewTask { group: Some("h".into()), priority: 0, ..task("h") }, 0);
    assert_eq!(ids(&dequeue(&mut e, &["q"], 10, 1)), [high, mid, other]);
}

#[test]
fn dead_task_releases_its_group_slot() {
    let mut e = engine();
    configure(&mut e, "q", QueueConfigPatch { group_concurrency: Some(Some(1)), ..Default::default() });
    let g = |p: &'static str| NewTask { group: Some("g".into()), ..task(p) };
    let a = enqueue(&mut e, "q", g("a"), 0);
    let b = enqueue(&mut e, "q", g("b"), 0);
    let l = dequeue(&mut e, &["q"], 1, 0);
    assert_eq!(e.fail(a, l[0].lease, "fatal", false, 1).unwrap(), TaskState::Dead);
    assert_eq!(ids(&dequeue(&mut e, &["q"], 1, 2)), [b]);
}

#[test]
fn changing_discipline_reorders_ready_tasks() {
    let mut e = engine();
    let a = enqueue(&mut e, "q", NewTask { priority: 1, ..task("a") }, 0);
    let b = enqueue(&mut e, "q", NewTask { priority: 3, ..task("b") }, 0);
    let c = enqueue(&mut e, "q", NewTask { priority: 2, ..task("c") }, 0);
    configure(&mut e, "q", QueueConfigPatch { discipline: Some(Discipline::Priority), ..Default::default() });
    checked(&e);
    assert_eq!(ids(&dequeue(&mut e, &["q"], 3, 1)), [b, c, a]);
}

#[test]
fn dequeue_takes_from_queues_in_the_order_given_up_to_max() {
    let mut e = engine();
    let a1 = enqueue(&mut e, "a", task("a1"), 0);
    let b1 = enqueue(&mut e, "b", task("b1"), 0);
    let b2 = enqueue(&mut e, "b", task("b2"), 0);
    let _b3 = enqueue(&mut e, "b", task("b3"), 0);
    let got = dequeue(&mut e, &["a", "b"], 3, 1);
    assert_eq!(ids(&got), [a1, b1, b2]);
    assert_eq!((&*got[0].queue, &*got[1].queue), ("a", "b"));
}

#[test]
fn dequeue_of_a_queue_that_does_not_exist_is_refused_and_leases_nothing() {
    let mut e = engine();
    enqueue(&mut e, "a", task("a1"), 0);
    let mut out = Vec::new();
    let error = e.dequeue(&["a", "missing", "b"], 3, None, 1, &mut out).unwrap_err();
    assert_eq!(error, EngineError::QueueNotFound("missing".into()));
    assert!(out.is_empty());
    assert_eq!(e.queue("a").unwrap().counts.get(TaskState::Ready), 1, "nothing leased from the queue that exists");
    assert!(e.queue("missing").is_none(), "dequeue creates no queue");
    checked(&e);
}

#[test]
fn dequeue_validates_its_arguments() {
    let mut e = engine();
    let mut out = Vec::new();
    let no_queues: [&str; 0] = [];
    assert_eq!(e.dequeue(&no_queues, 1, None, 0, &mut out).unwrap_err().code(), "invalid_argument");
    assert_eq!(e.dequeue(&["q"], 0, None, 0, &mut out).unwrap_err().code(), "invalid_argument");
    assert_eq!(e.dequeue(&["q"], 1_001, None, 0, &mut out).unwrap_err().code(), "invalid_argument");
    assert_eq!(e.dequeue(&["q"], 1, Some(0), 0, &mut out).unwrap_err().code(), "invalid_argument");
    assert_eq!(e.dequeue(&["bad/name"], 1, None, 0, &mut out).unwrap_err().code(), "invalid_argument");
}

#[test]
fn leased_task_carries_lease_attempt_and_expiry() {
    let mut e = engine();
    let a = enqueue(&mut e, "q", NewTask { group: Some("g".into()), priority: 4, ..task("payload") }, 0);
    let mut out = Vec::new();
    e.dequeue(&["q"], 1, Some(250), 100, &mut out).unwrap();
    let t = &out[0];
    assert_eq!((t.id, t.attempt, t.lease_expires_at_ms, t.priority), (a, 1, 350, 4));
    assert_eq!(t.group.as_deref(), Some("g"));
    assert_eq!(&t.payload[..], b"payload");
    let view = e.task(a).unwrap();
    assert_eq!((view.state, view.lease_expires_at_ms), (TaskState::Leased, Some(350)));
}

// ---- leases -----------------------------------------------------------------

#[test]
fn complete_requires_the_current_lease_token() {
    let mut e = engine();
    let a = enqueue(&mut e, "q", task("a"), 0);
    let l = dequeue(&mut e, &["q"], 1, 0);
    assert_eq!(e.complete(a, l[0].lease ^ 1, None, 1).unwrap_err().code(), "lease_mismatch");
    e.complete(a, l[0].lease, Some(Bytes::from_static(b"done")), 1).unwrap();
    let view = e.task(a).unwrap();
    assert_eq!(view.state, TaskState::Completed);
    assert_eq!(view.result.as_deref(), Some(&b"done"[..]));
    assert_eq!(e.complete(a, l[0].lease, None, 2).unwrap_err().code(), "not_leased");
}

#[test]
fn expired_lease_is_not_completable_even_before_a_tick() {
    let mut e = engine();
    let a = enqueue(&mut e, "q", task("a"), 0);
    let mut out = Vec::new();
    e.dequeue(&["q"], 1, Some(100), 0, &mut out).unwrap();
    assert_eq!(e.complete(a, out[0].lease, None, 100).unwrap_err().code(), "lease_expired");
    assert_eq!(e.extend(a, out[0].lease, 100, 100).unwrap_err().code(), "lease_expired");
    assert_eq!(e.fail(a, out[0].lease, "x", true, 100).unwrap_err().code(), "lease_expired");
}

#[test]
fn stale_holder_cannot_complete_after_redelivery() {
    let mut e = engine();
    configure(&mut e, "q", QueueConfigPatch { backoff_ms: Some(0), lease_ms: Some(10), ..Default::default() });
    let a = enqueue(&mut e, "q", task("a"), 0);
    let first = dequeue(&mut e, &["q"], 1, 0);
    let report = e.tick(10, usize::MAX);
    assert_eq!(report.expired, 1);
    let second = dequeue(&mut e, &["q"], 1, 11);
    assert_eq!(second[0].attempt, 2);
    assert_ne!(first[0].lease, second[0].lease);
    assert_eq!(e.complete(a, first[0].lease, None, 12).unwrap_err().code(), "lease_mismatch");
    e.complete(a, second[0].lease, None, 12).unwrap();
}

#[test]
fn extend_moves_the_expiry_and_keeps_the_token() {
    let mut e = engine();
    let a = enqueue(&mut e, "q", task("a"), 0);
    let mut out = Vec::new();
    e.dequeue(&["q"], 1, Some(100), 0, &mut out).unwrap();
    assert_eq!(e.extend(a, out[0].lease, 500, 50).unwrap(), 550);
    assert_eq!(e.tick(549, usize::MAX).expired, 0);
    e.complete(a, out[0].lease, None, 549).unwrap();
    assert_eq!(e.extend(a, out[0].lease, 0, 550).unwrap_err().code(), "invalid_argument");
}

#[test]
fn lease_expiry_counts_as_a_failed_attempt() {
    let mut e = engine();
    configure(
        &mut e,
        "q",
        QueueConfigPatch { max_attempts: Some(2), backoff_ms: Some(0), lease_ms: Some(10), ..Default::default() },
    );
    let a = enqueue(&mut e, "q", task("a"), 0);
    dequeue(&mut e, &["q"], 1, 0);
    assert_eq!(e.tick(10, usize::MAX).expired, 1);
    assert_eq!(state(&e, a), TaskState::Ready);
    dequeue(&mut e, &["q"], 1, 10);
    let report = e.tick(20, usize::MAX);
    assert_eq!((report.expired, report.dead), (1, 1));
    let view = e.task(a).unwrap();
    assert_eq!((view.state, view.attempts, view.error.as_deref()), (TaskState::Dead, 2, Some("lease expired")));
}

// ---- retries ------------------------------------------------------------------

#[test]
fn failed_attempt_is_retried_after_exponential_backoff() {
    let mut e = engine();
    configure(
        &mut e,
        "q",
        QueueConfigPatch {
            max_attempts: Some(4),
            backoff_ms: Some(100),
            backoff_max_ms: Some(150),
            ..Default::default()
        },
    );
    let a = enqueue(&mut e, "q", task("a"), 0);
    let mut now = 0;
    for attempt in 1..=3u32 {
        let l = dequeue(&mut e, &["q"], 1, now);
        assert_eq!(l[0].attempt, attempt);
        assert_eq!(e.fail(a, l[0].lease, "try again", true, now).unwrap(), TaskState::Delayed);
        let not_before = e.task(a).unwrap().not_before_ms.unwrap();
        let full = (100u64 << (attempt - 1)).min(150);
        assert!(
            not_before - now >= full / 2 && not_before - now <= full,
            "attempt {attempt}: waited {}",
            not_before - now
        );
        assert!(dequeue(&mut e, &["q"], 1, not_before - 1).is_empty(), "not served during backoff");
        e.tick(not_before - 1, usize::MAX);
        assert_eq!(state(&e, a), TaskState::Delayed);
        assert_eq!(e.tick(not_before, usize::MAX).promoted, 1);
        now = not_before;
    }
    let l = dequeue(&mut e, &["q"], 1, now);
    assert_eq!(e.fail(a, l[0].lease, "last", true, now).unwrap(), TaskState::Dead);
    assert_eq!(e.task(a).unwrap().error.as_deref(), Some("last"));
}

#[test]
fn fail_without_retry_buries_the_task() {
    let mut e = engine();
    let a = enqueue(&mut e, "q", task("a"), 0);
    let l = dequeue(&mut e, &["q"], 1, 0);
    assert_eq!(e.fail(a, l[0].lease, "poison", false, 1).unwrap(), TaskState::Dead);
    assert_eq!(e.queue("q").unwrap().counts.get(TaskState::Dead), 1);
}

#[test]
fn retried_task_keeps_its_place_ahead_of_younger_tasks() {
    let mut e = engine();
    configure(&mut e, "q", QueueConfigPatch { backoff_ms: Some(0), ..Default::default() });
    let a = enqueue(&mut e, "q", task("a"), 0);
    let b = enqueue(&mut e, "q", task("b"), 0);
    let l = dequeue(&mut e, &["q"], 1, 0);
    assert_eq!(e.fail(a, l[0].lease, "x", true, 1).unwrap(), TaskState::Ready);
    assert_eq!(ids(&dequeue(&mut e, &["q"], 2, 2)), [a, b]);
}

#[test]
fn per_task_max_attempts_overrides_the_queue_default() {
    let mut e = engine();
    let a = enqueue(&mut e, "q", NewTask { max_attempts: Some(1), ..task("a") }, 0);
    let l = dequeue(&mut e, &["q"], 1, 0);
    assert_eq!(e.fail(a, l[0].lease, "x", true, 1).unwrap(), TaskState::Dead);
}

// ---- delays, cancel, retention ---------------------------------------------------

#[test]
fn delayed_task_becomes_ready_at_its_time() {
    let mut e = engine();
    let a = enqueue(&mut e, "q", NewTask { delay_ms: 50, ..task("a") }, 100);
    assert_eq!(state(&e, a), TaskState::Delayed);
    assert_eq!(e.task(a).unwrap().not_before_ms, Some(150));
    assert_eq!(e.next_due_ms(), Some(150));
    assert!(dequeue(&mut e, &["q"], 1, 149).is_empty());
    assert_eq!(e.tick(149, usize::MAX).promoted, 0);
    assert_eq!(e.tick(150, usize::MAX).promoted, 1);
    assert_eq!(ids(&dequeue(&mut e, &["q"], 1, 150)), [a]);
}

#[test]
fn cancel_works_in_every_unfinished_state_and_refuses_finished_tasks() {
    let mut e = engine();
    let ready = enqueue(&mut e, "q", task("r"), 0);
    let delayed = enqueue(&mut e, "q", NewTask { delay_ms: 10, ..task("d") }, 0);
    let leased = enqueue(&mut e, "l", task("l"), 0);
    let l = dequeue(&mut e, &["l"], 1, 0);
    let waiting = enqueue(&mut e, "q", NewTask { depends_on: vec![DepRef::Task(leased)], ..task("w") }, 0);
    for id in [ready, delayed, waiting, leased] {
        e.cancel(id, 1).unwrap();
        assert_eq!(state(&e, id), TaskState::Cancelled);
        assert_eq!(e.cancel(id, 1).unwrap_err().code(), "task_finished");
    }
    assert_eq!(e.complete(leased, l[0].lease, None, 2).unwrap_err().code(), "not_leased");
    assert_eq!(e.cancel(999, 2).unwrap_err().code(), "task_not_found");
    assert!(dequeue(&mut e, &["q", "l"], 10, 20).is_empty());
    checked(&e);
}

#[test]
fn finished_tasks_are_purged_after_retention_with_their_keys() {
    let mut e = engine();
    configure(&mut e, "q", QueueConfigPatch { retention_ms: Some(1_000), ..Default::default() });
    let a = enqueue(&mut e, "q", NewTask { key: Some("k".into()), ..task("a") }, 0);
    let l = dequeue(&mut e, &["q"], 1, 0);
    e.complete(a, l[0].lease, None, 10).unwrap();
    assert_eq!(e.task(a).unwrap().purge_at_ms, Some(1_010));
    assert_eq!(e.tick(1_009, usize::MAX).purged, 0);
    assert_eq!(e.enqueue("q", NewTask { key: Some("k".into()), ..task("again") }, 1_009).unwrap().id, a);
    assert_eq!(e.tick(1_010, usize::MAX).purged, 1);
    assert!(e.task(a).is_none());
    let again = e.enqueue("q", NewTask { key: Some("k".into()), ..task("again") }, 1_011).unwrap();
    assert!(again.created && again.id != a);
    checked(&e);
}

#[test]
fn zero_retention_forgets_tasks_as_they_finish() {
    let mut e = engine();
    configure(&mut e, "q", QueueConfigPatch { retention_ms: Some(0), ..Default::default() });
    let a = enqueue(&mut e, "q", task("a"), 0);
    let l = dequeue(&mut e, &["q"], 1, 0);
    e.complete(a, l[0].lease, None, 1).unwrap();
    assert!(e.task(a).is_none());
    assert_eq!(e.tasks_count(), 0);
    assert_eq!(e.queue("q").unwrap().counts.total(), 0);
    checked(&e);
}

#[test]
fn tick_work_is_bounded_and_reports_more_due() {
    let mut e = engine();
    for i in 0..10 {
        enqueue(&mut e, "q", NewTask { delay_ms: 5 + i, ..task("x") }, 0);
    }
    let report = e.tick(100, 4);
    assert_eq!((report.fired, report.promoted, report.more_due), (4, 4, true));
    let report = e.tick(100, 6);
    assert_eq!((report.fired, report.more_due), (6, false));
    assert_eq!(e.queue("q").unwrap().counts.get(TaskState::Ready), 10);
}

#[test]
fn clock_going_backwards_is_taken_as_the_latest_time_seen() {
    let mut e = engine();
    let a = enqueue(&mut e, "q", task("a"), 1_000);
    let mut out = Vec::new();
    e.dequeue(&["q"], 1, Some(100), 10, &mut out).unwrap();
    assert_eq!(out[0].lease_expires_at_ms, 1_100);
    assert_eq!(e.task(a).unwrap().updated_at_ms, 1_000);
}

// ---- idempotency and batches -------------------------------------------------------

#[test]
fn repeated_key_returns_the_original_task() {
    let mut e = engine();
    let first = e.enqueue("q", NewTask { key: Some("order-1".into()), ..task("a") }, 0).unwrap();
    let again = e.enqueue("q", NewTask { key: Some("order-1".into()), ..task("different") }, 1).unwrap();
    assert!(first.created && !again.created);
    assert_eq!(again.id, first.id);
    assert_eq!(e.tasks_count(), 1);
    assert_eq!(&e.task(first.id).unwrap().payload[..], b"a");
    // Keys are per queue.
    assert!(e.enqueue("other", NewTask { key: Some("order-1".into()), ..task("a") }, 1).unwrap().created);
}

#[test]
fn repeated_key_reports_the_originals_current_state() {
    let mut e = engine();
    let a = enqueue(&mut e, "q", NewTask { key: Some("k".into()), ..task("a") }, 0);
    dequeue(&mut e, &["q"], 1, 0);
    let again = e.enqueue("q", NewTask { key: Some("k".into()), ..task("a") }, 1).unwrap();
    assert_eq!((again.id, again.state, again.created), (a, TaskState::Leased, false));
}

#[test]
fn batch_is_all_or_nothing() {
    let mut e = engine();
    let tasks = vec![task("a"), task("b"), NewTask { depends_on: vec![DepRef::Task(777)], ..task("c") }];
    match e.enqueue_batch("q", tasks, 0) {
        Err(EngineError::Invalid { field, .. }) => assert_eq!(field, "tasks[2].depends_on"),
        other => panic!("expected invalid, got {other:?}"),
    }
    assert_eq!(e.tasks_count(), 0);
    assert!(e.queue("q").is_none(), "a rejected batch creates no queue");
    let done = e.enqueue_batch("q", vec![task("a"), task("b")], 0).unwrap();
    assert_eq!(done.iter().map(|d| d.id).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn batch_refs_name_earlier_entries_only() {
    let mut e = engine();
    let forward = vec![NewTask { depends_on: vec![DepRef::Batch(1)], ..task("a") }, task("b")];
    assert_eq!(e.enqueue_batch("q", forward, 0).unwrap_err().code(), "invalid_argument");
    let own = vec![NewTask { depends_on: vec![DepRef::Batch(0)], ..task("a") }];
    assert_eq!(e.enqueue_batch("q", own, 0).unwrap_err().code(), "invalid_argument");
    let outside = NewTask { depends_on: vec![DepRef::Batch(0)], ..task("a") };
    assert_eq!(e.enqueue("q", outside, 0).unwrap_err().code(), "invalid_argument");
    let chain = vec![task("a"), NewTask { depends_on: vec![DepRef::Batch(0)], ..task("b") }];
    let done = e.enqueue_batch("q", chain, 0).unwrap();
    assert_eq!(done[1].state, TaskState::Waiting);
    assert_eq!(e.task(done[1].id).unwrap().depends_on, [done[0].id]);
}

#[test]
fn batch_dedupes_keys_against_the_queue_and_within_the_batch() {
    let mut e = engine();
    let old = enqueue(&mut e, "q", NewTask { key: Some("x".into()), ..task("old") }, 0);
    let batch = vec![
        NewTask { key: Some("x".into()), ..task("dup of old") },
        NewTask { key: Some("y".into()), ..task("new") },
        NewTask { key: Some("y".into()), ..task("dup of new") },
    ];
    let done = e.enqueue_batch("q", batch, 1).unwrap();
    assert_eq!((done[0].id, done[0].created), (old, false));
    assert!(done[1].created);
    assert_eq!((done[2].id, done[2].created), (done[1].id, false));
    assert_eq!(e.tasks_count(), 2);
}

#[test]
fn batch_size_and_fields_are_bounded() {
    let mut e = engine();
    assert_eq!(e.enqueue_batch("q", vec![], 0).unwrap_err().code(), "invalid_argument");
    let too_many = vec![task("x"); limits::BATCH_TASKS_COUNT_MAX + 1];
    assert_eq!(e.enqueue_batch("q", too_many, 0).unwrap_err().code(), "invalid_argument");
    let big = NewTask { payload: Bytes::from(vec![0u8; limits::PAYLOAD_BYTES_MAX + 1]), ..NewTask::default() };
    assert_eq!(e.enqueue("q", big, 0).unwrap_err().code(), "payload_too_large");
    let empty_group = NewTask { group: Some(String::new()), ..task("x") };
    assert_eq!(e.enqueue("q", empty_group, 0).unwrap_err().code(), "invalid_argument");
    let too_many_deps = NewTask { depends_on: vec![DepRef::Task(1); limits::DEPENDS_ON_COUNT_MAX + 1], ..task("x") };
    assert_eq!(e.enqueue("q", too_many_deps, 0).unwrap_err().code(), "invalid_argument");
}

#[test]
fn capacity_bounds_tasks_and_queues_with_a_retryable_error() {
    let mut e =
        Engine::new(EngineConfig { seed: 1, tasks_count_max: 2, queues_count_max: 1, ..EngineConfig::default() });
    enqueue(&mut e, "q", task("a"), 0);
    let err = e.enqueue("other", task("b"), 0).unwrap_err();
    assert_eq!((err.code(), err.retryable()), ("capacity_exceeded", true));
    enqueue(&mut e, "q", task("b"), 0);
    let err = e.enqueue("q", task("c"), 0).unwrap_err();
    assert_eq!((err.code(), err.kind()), ("capacity_exceeded", ErrorKind::Unavailable));
    assert_eq!(e.enqueue_batch("q", vec![task("c")], 0).unwrap_err().code(), "capacity_exceeded");
}

// ---- dependencies -------------------------------------------------------------------

#[test]
fn dependent_waits_until_all_dependencies_complete() {
    let mut e = engine();
    let a = enqueue(&mut e, "q", task("a"), 0);
    let b = enqueue(&mut e, "other", task("b"), 0);
    let c = enqueue(
        &mut e,
        "q",
        NewTask { depends_on: vec![DepRef::Task(a), DepRef::Task(b), DepRef::Task(a)], ..task("c") },
        0,
    );
    assert_eq!(state(&e, c), TaskState::Waiting);
    assert_eq!(e.task(c).unwrap().depends_on, [a, b]);
    let la = dequeue(&mut e, &["q"], 10, 1);
    assert_eq!(ids(&la), [a], "a waiting task is not served");
    e.complete(a, la[0].lease, None, 2).unwrap();
    assert_eq!(state(&e, c), TaskState::Waiting);
    let lb = dequeue(&mut e, &["other"], 1, 3);
    e.complete(b, lb[0].lease, None, 4).unwrap();
    assert_eq!(state(&e, c), TaskState::Ready);
    checked(&e);
}

#[test]
fn dependent_with_pending_delay_becomes_delayed() {
    let mut e = engine();
    let a = enqueue(&mut e, "q", task("a"), 0);
    let c = enqueue(&mut e, "q", NewTask { delay_ms: 100, depends_on: vec![DepRef::Task(a)], ..task("c") }, 0);
    assert_eq!(e.task(c).unwrap().not_before_ms, Some(100));
    let l = dequeue(&mut e, &["q"], 1, 10);
    e.complete(a, l[0].lease, None, 10).unwrap();
    assert_eq!(state(&e, c), TaskState::Delayed);
    e.tick(100, usize::MAX);
    assert_eq!(state(&e, c), TaskState::Ready);
}

#[test]
fn completed_dependency_is_already_satisfied() {
    let mut e = engine();
    let a = enqueue(&mut e, "q", task("a"), 0);
    let l = dequeue(&mut e, &["q"], 1, 0);
    e.complete(a, l[0].lease, None, 1).unwrap();
    let c = e.enqueue("q", NewTask { depends_on: vec![DepRef::Task(a)], ..task("c") }, 2).unwrap();
    assert_eq!(c.state, TaskState::Ready);
}

#[test]
fn unknown_dependency_is_invalid() {
    let mut e = engine();
    let err = e.enqueue("q", NewTask { depends_on: vec![DepRef::Task(5)], ..task("c") }, 0).unwrap_err();
    match err {
        EngineError::Invalid { field, .. } => assert_eq!(field, "depends_on"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn dependency_already_dead_creates_the_task_cancelled() {
    let mut e = engine();
    let a = enqueue(&mut e, "q", task("a"), 0);
    let l = dequeue(&mut e, &["q"], 1, 0);
    e.fail(a, l[0].lease, "x", false, 1).unwrap();
    let c = e.enqueue("q", NewTask { depends_on: vec![DepRef::Task(a)], ..task("c") }, 2).unwrap();
    assert_eq!(c.state, TaskState::Cancelled);
    assert_eq!(e.task(c.id).unwrap().error.unwrap(), format!("dependency {a} is dead"));
}

#[test]
fn failure_of_a_dependency_cancels_dependents_transitively() {
    let mut e = engine();
    let a = enqueue(&mut e, "q", task("a"), 0);
    let b = enqueue(&mut e, "q", NewTask { depends_on: vec![DepRef::Task(a)], ..task("b") }, 0);
    let c = enqueue(&mut e, "other", NewTask { depends_on: vec![DepRef::Task(b)], ..task("c") }, 0);
    let unrelated = enqueue(&mut e, "q", task("u"), 0);
    let l = dequeue(&mut e, &["q"], 1, 0);
    e.fail(a, l[0].lease, "fatal", false, 1).unwrap();
    assert_eq!(e.task(b).unwrap().error.unwrap(), format!("dependency {a} is dead"));
    assert_eq!(e.task(c).unwrap().error.unwrap(), format!("dependency {b} is cancelled"));
    assert_eq!(state(&e, c), TaskState::Cancelled);
    assert_eq!(state(&e, unrelated), TaskState::Ready);
    checked(&e);
}

#[test]
fn cancelling_a_dependency_cancels_its_dependents() {
    let mut e = engine();
    let a = enqueue(&mut e, "q", task("a"), 0);
    let b = enqueue(&mut e, "q", NewTask { depends_on: vec![DepRef::Task(a)], ..task("b") }, 0);
    e.cancel(a, 1).unwrap();
    assert_eq!(state(&e, b), TaskState::Cancelled);
}

#[test]
fn completing_a_task_releases_ten_thousand_dependents() {
    let mut e = engine();
    let parent = enqueue(&mut e, "q", task("p"), 0);
    let children: Vec<NewTask> =
        (0..10_000).map(|_| NewTask { depends_on: vec![DepRef::Task(parent)], ..task("c") }).collect();
    e.enqueue_batch("kids", children, 0).unwrap();
    assert_eq!(e.queue("kids").unwrap().counts.get(TaskState::Waiting), 10_000);
    let l = dequeue(&mut e, &["q"], 1, 1);
    e.complete(parent, l[0].lease, None, 2).unwrap();
    assert_eq!(e.queue("kids").unwrap().counts.get(TaskState::Ready), 10_000);
    checked(&e);
}

#[test]
fn a_long_dependency_chain_cancels_without_recursion() {
    let mut e = engine();
    let root = enqueue(&mut e, "q", task("root"), 0);
    let mut last = root;
    for _ in 0..100_000 {
        last = enqueue(&mut e, "q", NewTask { depends_on: vec![DepRef::Task(last)], ..task("x") }, 0);
    }
    e.cancel(root, 1).unwrap();
    assert_eq!(state(&e, last), TaskState::Cancelled);
    assert_eq!(e.queue("q").unwrap().counts.get(TaskState::Cancelled), 100_001);
}

// ---- lookups ---------------------------------------------------------------------------

#[test]
fn task_lookup_shows_every_field() {
    let mut e = engine();
    let dep = enqueue(&mut e, "q", task("dep"), 5);
    let t = NewTask {
        payload: Bytes::from_static(b"body"),
        priority: 7,
        group: Some("g".into()),
        delay_ms: 0,
        max_attempts: Some(9),
        depends_on: vec![DepRef::Task(dep)],
        key: Some("key".into()),
    };
    let id = enqueue(&mut e, "q", t, 10);
    let view = e.task(id).unwrap();
    assert_eq!(&*view.queue, "q");
    assert_eq!((view.state, view.priority, view.max_attempts, view.attempts), (TaskState::Waiting, 7, 9, 0));
    assert_eq!((view.group.as_deref(), view.key.as_deref()), (Some("g"), Some("key")));
    assert_eq!(view.depends_on, [dep]);
    assert_eq!((view.created_at_ms, view.updated_at_ms, view.not_before_ms), (10, 10, Some(10)));
    assert_eq!((view.lease_expires_at_ms, view.purge_at_ms, view.result, view.error), (None, None, None, None));
    assert!(e.task(12345).is_none());
}

#[test]
fn ids_are_monotonic_and_never_reused() {
    let mut e = engine();
    configure(&mut e, "q", QueueConfigPatch { retention_ms: Some(0), ..Default::default() });
    let mut last = 0;
    for _ in 0..100 {
        let id = enqueue(&mut e, "q", task("x"), 0);
        assert!(id > last);
        last = id;
        let l = dequeue(&mut e, &["q"], 1, 0);
        e.complete(id, l[0].lease, None, 0).unwrap();
    }
}

#[test]
fn task_record_stays_small() {
    // The footprint issue holds the engine to <= 128 bytes per queued task beyond
    // its payload; the slab record is the largest part of that.
    assert!(std::mem::size_of::<Task>() <= 96, "Task is {} bytes", std::mem::size_of::<Task>());
}

#[test]
fn extend_does_not_change_updated_at() {
    // Regression: extend went through a leased -> leased state change and stamped
    // `updated_at_ms`, which is the time of the last state change (found by the
    // property test).
    let mut e = engine();
    let a = enqueue(&mut e, "q", task("a"), 0);
    let l = dequeue(&mut e, &["q"], 1, 3);
    e.extend(a, l[0].lease, 5, 4).unwrap();
    assert_eq!(e.task(a).unwrap().updated_at_ms, 3);
}

#[test]
fn times_near_the_end_of_u64_keep_their_retention() {
    let mut e = engine();
    let now = u64::MAX - 10;
    let a = enqueue(&mut e, "q", task("a"), now);
    let l = dequeue(&mut e, &["q"], 1, now);
    assert_eq!(l[0].lease_expires_at_ms, u64::MAX - 1);
    e.complete(a, l[0].lease, None, now).unwrap();
    assert_eq!(e.task(a).unwrap().purge_at_ms, Some(u64::MAX - 1));
    checked(&e);
}

// ---- dead letters: listing, retry, delete, dead retention ---------------------

/// Buries task `id` of queue `q` (it must be the next one served).
fn bury(e: &mut Engine, q: &str, id: TaskId, error: &str, now: u64) {
    let l = dequeue(e, &[q], 1, now);
    assert_eq!(ids(&l), [id]);
    assert_eq!(e.fail(id, l[0].lease, error, false, now).unwrap(), TaskState::Dead);
}

fn listed(e: &Engine, q: &str, state: TaskState, after: TaskId, limit: usize) -> (Vec<TaskId>, Option<TaskId>) {
    let page = e.list_tasks(q, state, after, limit).expect("valid listing");
    (page.tasks.iter().map(|t| t.id).collect(), page.next_cursor)
}

#[test]
fn dead_tasks_are_listed_in_id_order_with_what_an_operator_needs() {
    let mut e = engine();
    let a = enqueue(&mut e, "q", task("a"), 0);
    let b = enqueue(&mut e, "q", task("b"), 0);
    let c = enqueue(&mut e, "q", task("c"), 0);
    let other = enqueue(&mut e, "other", task("o"), 0);
    // Buried out of id order: c first, then a.
    bury(&mut e, "q", a, "boom a", 5);
    let l = dequeue(&mut e, &["q"], 2, 6);
    assert_eq!(ids(&l), [b, c]);
    e.fail(c, l[1].lease, "boom c", false, 7).unwrap();
    bury(&mut e, "other", other, "x", 8);
    let page = e.list_tasks("q", TaskState::Dead, 0, 10).unwrap();
    assert_eq!(page.tasks.iter().map(|t| t.id).collect::<Vec<_>>(), [a, c]);
    assert_eq!(page.next_cursor, None);
    let view = &page.tasks[0];
    assert_eq!((&*view.payload, view.attempts, view.max_attempts), (&b"a"[..], 1, 3));
    assert_eq!((view.error.as_deref(), view.updated_at_ms), (Some("boom a"), 5));
    assert_eq!(view.purge_at_ms, Some(5 + limits::DEAD_RETENTION_MS_DEFAULT));
    // Other states walk the ids: the leased one, and the ready one of "other" is not here.
    assert_eq!(listed(&e, "q", TaskState::Leased, 0, 10), (vec![b], None));
    assert_eq!(listed(&e, "q", TaskState::Ready, 0, 10), (vec![], None));
}

#[test]
fn a_listing_cursor_pages_by_limit_and_survives_inserts_and_removals() {
    let mut e = engine();
    let dead: Vec<TaskId> = (0..5).map(|_| enqueue(&mut e, "q", task("x"), 0)).collect();
    for &id in &dead {
        bury(&mut e, "q", id, "x", 1);
    }
    assert_eq!(listed(&e, "q", TaskState::Dead, 0, 2), (vec![dead[0], dead[1]], Some(dead[1])));
    // Between pages: the next one on the page is deleted, one more dies.
    e.delete_task(dead[2], 2).unwrap();
    let late = enqueue(&mut e, "q", task("late"), 2);
    bury(&mut e, "q", late, "x", 3);
    assert_eq!(listed(&e, "q", TaskState::Dead, dead[1], 2), (vec![dead[3], dead[4]], Some(dead[4])));
    assert_eq!(listed(&e, "q", TaskState::Dead, dead[4], 2), (vec![late], None));
    // A cursor past everything is an empty, final page.
    assert_eq!(listed(&e, "q", TaskState::Dead, u64::MAX, 2), (vec![], None));
    // The same for a walked state: ready tasks, two per page.
    let ready: Vec<TaskId> = (0..3).map(|_| enqueue(&mut e, "q", task("r"), 4)).collect();
    assert_eq!(listed(&e, "q", TaskState::Ready, 0, 2), (vec![ready[0], ready[1]], Some(ready[1])));
    e.cancel(ready[2], 5).unwrap();
    let newer = enqueue(&mut e, "q", task("n"), 5);
    assert_eq!(listed(&e, "q", TaskState::Ready, ready[1], 2), (vec![newer], None));
    checked(&e);
}

#[test]
fn a_walked_listing_examines_a_bounded_number_of_ids_per_page() {
    let mut e = engine();
    let first = enqueue(&mut e, "q", task("first"), 0);
    let ids_count = limits::LIST_TASKS_SCAN_IDS_MAX + 10;
    let batch: Vec<NewTask> = (0..10_000).map(|_| task("n")).collect();
    let mut issued = 1;
    while issued < ids_count {
        issued += e.enqueue_batch("noise", batch.clone(), 0).unwrap().len() as u64;
    }
    let last = enqueue(&mut e, "q", task("last"), 0);
    // The first page runs out of budget: it ends with a cursor, short of `limit`.
    let (page, cursor) = listed(&e, "q", TaskState::Ready, 0, 10);
    assert_eq!(page, [first]);
    assert_eq!(cursor, Some(limits::LIST_TASKS_SCAN_IDS_MAX));
    let mut after = cursor.unwrap();
    let mut found = Vec::new();
    loop {
        let (page, cursor) = listed(&e, "q", TaskState::Ready, after, 10);
        found.extend(page);
        match cursor {
            Some(cursor) => after = cursor,
            None => break,
        }
    }
    assert_eq!(found, [last]);
}

#[test]
fn a_listing_page_stops_at_its_byte_bound_but_always_advances() {
    let mut e = engine();
    // Payloads of the largest size: the bound is reached after `per_page` of them.
    let per_page = limits::LIST_TASKS_PAGE_BYTES_MAX / limits::PAYLOAD_BYTES_MAX;
    let big = Bytes::from(vec![b'1'; limits::PAYLOAD_BYTES_MAX]);
    let ids: Vec<TaskId> = (0..=per_page)
        .map(|_| enqueue(&mut e, "q", NewTask { payload: big.clone(), ..NewTask::default() }, 0))
        .collect();
    let last = ids[per_page - 1];
    assert_eq!(listed(&e, "q", TaskState::Ready, 0, 10), (ids[..per_page].to_vec(), Some(last)));
    assert_eq!(listed(&e, "q", TaskState::Ready, last, 10), (vec![ids[per_page]], None));
}

#[test]
fn a_listing_validates_its_queue_and_limit() {
    let mut e = engine();
    enqueue(&mut e, "q", task("a"), 0);
    assert_eq!(e.list_tasks("nope", TaskState::Dead, 0, 1).unwrap_err().code(), "queue_not_found");
    assert_eq!(e.list_tasks("bad name", TaskState::Dead, 0, 1).unwrap_err().code(), "invalid_argument");
    for limit in [0, limits::LIST_TASKS_COUNT_MAX + 1] {
        assert_eq!(e.list_tasks("q", TaskState::Dead, 0, limit).unwrap_err().code(), "invalid_argument");
    }
    assert!(e.list_tasks("q", TaskState::Dead, 0, limits::LIST_TASKS_COUNT_MAX).is_ok());
}

#[test]
fn retry_makes_a_dead_task_ready_with_fresh_attempts() {
    let mut e = engine();
    configure(&mut e, "q", QueueConfigPatch { max_attempts: Some(2), backoff_ms: Some(0), ..Default::default() });
    let a = enqueue(&mut e, "q", task("a"), 0);
    let b = enqueue(&mut e, "q", task("b"), 0);
    let first = dequeue(&mut e, &["q"], 1, 1);
    e.fail(a, first[0].lease, "one", true, 1).unwrap();
    let second = dequeue(&mut e, &["q"], 1, 2);
    assert_eq!(e.fail(a, second[0].lease, "two", true, 2).unwrap(), TaskState::Dead);
    e.retry(a, 10).unwrap();
    let view = e.task(a).unwrap();
    assert_eq!((view.state, view.attempts, view.max_attempts), (TaskState::Ready, 0, 2));
    assert_eq!((view.updated_at_ms, view.purge_at_ms, view.error.as_deref()), (10, None, Some("two")));
    assert_eq!(listed(&e, "q", TaskState::Dead, 0, 10), (vec![], None));
    // Ready again in its place (ahead of the younger b), with its attempts.
    let again = dequeue(&mut e, &["q"], 1, 11);
    assert_eq!((ids(&again), again[0].attempt), (vec![a], 1));
    // No lease of its first life matches one of its second.
    assert_ne!(again[0].lease, first[0].lease);
    assert_eq!(e.complete(a, first[0].lease, None, 12).unwrap_err().code(), "lease_mismatch");
    e.complete(a, again[0].lease, None, 12).unwrap();
    assert_eq!(ids(&dequeue(&mut e, &["q"], 1, 13)), [b]);
    checked(&e);
}

#[test]
fn retry_of_a_task_that_is_not_dead_conflicts() {
    let mut e = engine();
    let ready = enqueue(&mut e, "q", task("r"), 0);
    let cancelled = enqueue(&mut e, "q", task("c"), 0);
    e.cancel(cancelled, 1).unwrap();
    for (id, was) in [(ready, TaskState::Ready), (cancelled, TaskState::Cancelled)] {
        assert_eq!(e.retry(id, 2), Err(EngineError::TaskNotDead { id, state: was }));
        assert_eq!(state(&e, id), was);
    }
    assert_eq!(e.retry(999, 2).unwrap_err().code(), "task_not_found");
    checked(&e);
}

#[test]
fn delete_forgets_a_finished_task_and_refuses_an_unfinished_one() {
    let mut e = engine();
    let a = enqueue(&mut e, "q", NewTask { key: Some("k".into()), ..task("a") }, 0);
    let b = enqueue(&mut e, "q", task("b"), 0);
    bury(&mut e, "q", a, "x", 1);
    assert_eq!(e.delete_task(b, 2), Err(EngineError::TaskNotFinished { id: b, state: TaskState::Ready }));
    e.delete_task(a, 2).unwrap();
    assert!(e.task(a).is_none());
    assert_eq!(e.queue("q").unwrap().counts.get(TaskState::Dead), 0);
    assert_eq!(e.delete_task(a, 3).unwrap_err().code(), "task_not_found");
    // Its key is free again.
    assert!(e.enqueue("q", NewTask { key: Some("k".into()), ..task("a2") }, 3).unwrap().created);
    checked(&e);
}

#[test]
fn dead_tasks_are_purged_at_their_own_retention_not_the_finished_one() {
    let mut e = engine();
    let patch = QueueConfigPatch { retention_ms: Some(100), dead_retention_ms: Some(1_000), ..Default::default() };
    configure(&mut e, "q", patch);
    assert_eq!(e.queue("q").unwrap().config.dead_retention_ms, 1_000);
    let done = enqueue(&mut e, "q", task("done"), 0);
    let dead = enqueue(&mut e, "q", task("dead"), 0);
    let l = dequeue(&mut e, &["q"], 1, 10);
    e.complete(done, l[0].lease, None, 10).unwrap();
    bury(&mut e, "q", dead, "x", 10);
    assert_eq!(e.task(dead).unwrap().purge_at_ms, Some(1_010));
    assert_eq!(e.tick(110, usize::MAX).purged, 1);
    assert!(e.task(done).is_none() && e.task(dead).is_some());
    assert_eq!(e.tick(1_009, usize::MAX).purged, 0);
    assert_eq!(e.tick(1_010, usize::MAX).purged, 1);
    assert!(e.task(dead).is_none());
    // 0 forgets a task as it dies.
    configure(&mut e, "q", QueueConfigPatch { dead_retention_ms: Some(0), ..Default::default() });
    let gone = enqueue(&mut e, "q", task("gone"), 2_000);
    bury(&mut e, "q", gone, "x", 2_000);
    assert!(e.task(gone).is_none());
    let error = e
        .configure_queue(
            "q",
            &QueueConfigPatch { dead_retention_ms: Some(limits::RETENTION_MS_MAX + 1), ..Default::default() },
            0,
        )
        .unwrap_err();
    assert!(matches!(error, EngineError::Invalid { ref field, .. } if field == "dead_retention_ms"), "{error}");
    checked(&e);
}
