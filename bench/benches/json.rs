//! JSON library choice for the HTTP API: serde_json against sonic-rs (a SIMD,
//! serde-compatible parser) on this server's own request and reply shapes, in the
//! same run.
//!
//! `taskset -c 1 cargo bench -p tqx-bench --bench json -- --warm-up-time 1 --measurement-time 3`
//!
//! | benchmark | what one iteration does |
//! |---|---|
//! | `enqueue_members/{serde_json,sonic_rs}` | the approach `src/http` uses: one pass over a ~150-byte enqueue body into the raw text of each member (borrowed `&RawValue` / `LazyValue`), unknown members refused, then each member parsed on its own |
//! | `enqueue_typed/{serde_json,sonic_rs}` | the same body into a typed struct in one pass (payload kept raw) |
//! | `enqueue_request/tqx_http` | `taskqueuex::http::next_request` on the whole HTTP request carrying that body, up to the `Command` (context: the cost the reactor pays) |
//! | `dequeue_reply_parse/{serde_json,sonic_rs}` | a dequeue reply with 1 and with 10 leased tasks, parsed into typed structs (what a client does) |
//! | `dequeue_reply_render/{serde_json,sonic_rs,tqx_http}` | the same reply written: serde `Serialize` with each library, and `render_reply` (the hand-written renderer, which also writes the HTTP head) |

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sonic_rs::LazyValue;
use taskqueuex::command::Reply;
use taskqueuex::engine::LeasedTask;
use taskqueuex::http::{next_request, render_reply, Action, Limits, Next};

const ENQUEUE_BODY: &str = r#"{"payload":{"to":"alice@example.com","subject":"Welcome","template":"welcome-v2"},"priority":5,"group":"tenant-42","key":"order-1234567"}"#;

// ---- enqueue: raw members, then each member ------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersSerdeJson<'a> {
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    #[serde(borrow)]
    priority: Option<&'a RawValue>,
    #[serde(borrow)]
    group: Option<&'a RawValue>,
    #[serde(borrow)]
    delay_ms: Option<&'a RawValue>,
    #[serde(borrow)]
    max_attempts: Option<&'a RawValue>,
    #[serde(borrow)]
    depends_on: Option<&'a RawValue>,
    #[serde(borrow)]
    key: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersSonic<'a> {
    #[serde(borrow)]
    payload: Option<LazyValue<'a>>,
    #[serde(borrow)]
    priority: Option<LazyValue<'a>>,
    #[serde(borrow)]
    group: Option<LazyValue<'a>>,
    #[serde(borrow)]
    delay_ms: Option<LazyValue<'a>>,
    #[serde(borrow)]
    max_attempts: Option<LazyValue<'a>>,
    #[serde(borrow)]
    depends_on: Option<LazyValue<'a>>,
    #[serde(borrow)]
    key: Option<LazyValue<'a>>,
}

/// What both variants produce, so that neither skips work.
struct Parsed {
    payload: Bytes,
    priority: i32,
    group: Option<String>,
    delay_ms: u64,
    max_attempts: Option<u32>,
    depends_on: Vec<u64>,
    key: Option<String>,
}

fn raw_text(raw: Option<&RawValue>) -> Option<&str> {
    raw.map(RawValue::get)
}

fn lazy_text<'a>(raw: &'a Option<LazyValue<'_>>) -> Option<&'a str> {
    raw.as_ref().map(LazyValue::as_raw_str)
}

fn members_serde_json(body: &str) -> Parsed {
    let m: MembersSerdeJson = serde_json::from_str(body).expect("valid body");
    Parsed {
        payload: Bytes::copy_from_slice(m.payload.expect("payload").get().as_bytes()),
        priority: raw_text(m.priority).map_or(0, |t| serde_json::from_str(t).expect("priority")),
        group: raw_text(m.group).map(|t| serde_json::from_str(t).expect("group")),
        delay_ms: raw_text(m.delay_ms).map_or(0, |t| serde_json::from_str(t).expect("delay_ms")),
        max_attempts: raw_text(m.max_attempts).map(|t| serde_json::from_str(t).expect("max_attempts")),
        depends_on: raw_text(m.depends_on).map_or_else(Vec::new, |t| serde_json::from_str(t).expect("depends_on")),
        key: raw_text(m.key).map(|t| serde_json::from_str(t).expect("key")),
    }
}

fn members_sonic(body: &str) -> Parsed {
    let m: MembersSonic = sonic_rs::from_str(body).expect("valid body");
    Parsed {
        payload: Bytes::copy_from_slice(m.payload.as_ref().expect("payload").as_raw_str().as_bytes()),
        priority: lazy_text(&m.priority).map_or(0, |t| sonic_rs::from_str(t).expect("priority")),
        group: lazy_text(&m.group).map(|t| sonic_rs::from_str(t).expect("group")),
        delay_ms: lazy_text(&m.delay_ms).map_or(0, |t| sonic_rs::from_str(t).expect("delay_ms")),
        max_attempts: lazy_text(&m.max_attempts).map(|t| sonic_rs::from_str(t).expect("max_attempts")),
        depends_on: lazy_text(&m.depends_on).map_or_else(Vec::new, |t| sonic_rs::from_str(t).expect("depends_on")),
        key: lazy_text(&m.key).map(|t| sonic_rs::from_str(t).expect("key")),
    }
}

// ---- enqueue: typed, one pass ----------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypedSerdeJson<'a> {
    #[serde(borrow)]
    payload: &'a RawValue,
    priority: Option<i32>,
    group: Option<String>,
    delay_ms: Option<u64>,
    max_attempts: Option<u32>,
    depends_on: Option<Vec<u64>>,
    key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypedSonic<'a> {
    #[serde(borrow)]
    payload: LazyValue<'a>,
    priority: Option<i32>,
    group: Option<String>,
    delay_ms: Option<u64>,
    max_attempts: Option<u32>,
    depends_on: Option<Vec<u64>>,
    key: Option<String>,
}

fn typed_serde_json(body: &str) -> Parsed {
    let t: TypedSerdeJson = serde_json::from_str(body).expect("valid body");
    Parsed {
        payload: Bytes::copy_from_slice(t.payload.get().as_bytes()),
        priority: t.priority.unwrap_or(0),
        group: t.group,
        delay_ms: t.delay_ms.unwrap_or(0),
        max_attempts: t.max_attempts,
        depends_on: t.depends_on.unwrap_or_default(),
        key: t.key,
    }
}

fn typed_sonic(body: &str) -> Parsed {
    let t: TypedSonic = sonic_rs::from_str(body).expect("valid body");
    Parsed {
        payload: Bytes::copy_from_slice(t.payload.as_raw_str().as_bytes()),
        priority: t.priority.unwrap_or(0),
        group: t.group,
        delay_ms: t.delay_ms.unwrap_or(0),
        max_attempts: t.max_attempts,
        depends_on: t.depends_on.unwrap_or_default(),
        key: t.key,
    }
}

// ---- dequeue reply ---------------------------------------------------------------

#[derive(Deserialize, Serialize)]
struct ReplySerdeJson<'a> {
    #[serde(borrow)]
    tasks: Vec<LeasedSerdeJson<'a>>,
}

#[derive(Deserialize, Serialize)]
struct LeasedSerdeJson<'a> {
    id: String,
    queue: String,
    #[serde(borrow)]
    payload: &'a RawValue,
    priority: i32,
    group: Option<String>,
    attempt: u32,
    lease: String,
    lease_expires_at_ms: u64,
}

#[derive(Deserialize, Serialize)]
struct ReplySonic<'a> {
    #[serde(borrow)]
    tasks: Vec<LeasedSonic<'a>>,
}

#[derive(Deserialize, Serialize)]
struct LeasedSonic<'a> {
    id: String,
    queue: String,
    #[serde(borrow)]
    payload: LazyValue<'a>,
    priority: i32,
    group: Option<String>,
    attempt: u32,
    lease: String,
    lease_expires_at_ms: u64,
}

fn leased_tasks(count: u64) -> Vec<LeasedTask> {
    (0..count)
        .map(|i| LeasedTask {
            id: 1_000 + i,
            queue: Arc::from("emails"),
            payload: Bytes::from_static(br#"{"to":"alice@example.com","subject":"Welcome","template":"welcome-v2"}"#),
            priority: 5,
            group: Some(Arc::from("tenant-42")),
            attempt: 1,
            lease: 1_234_567_890_123_456_789 + i,
            lease_expires_at_ms: 1_764_000_030_000,
        })
        .collect()
}

/// The body `render_reply` writes for `Reply::Leased(tasks)`.
fn reply_body(tasks: &[LeasedTask]) -> String {
    let mut out = Vec::new();
    render_reply(&Reply::Leased(tasks.to_vec()), true, &mut out);
    let text = String::from_utf8(out).expect("utf-8");
    let (_, body) = text.split_once("\r\n\r\n").expect("a head");
    body.to_owned()
}

fn json_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("json");

    // Both variants read the same values.
    for parse in [members_serde_json, members_sonic, typed_serde_json, typed_sonic] {
        let parsed = parse(ENQUEUE_BODY);
        assert_eq!(parsed.priority, 5);
        assert_eq!(parsed.group.as_deref(), Some("tenant-42"));
        assert_eq!(parsed.key.as_deref(), Some("order-1234567"));
        assert_eq!((parsed.delay_ms, parsed.max_attempts, parsed.depends_on.len()), (0, None, 0));
        assert!(parsed.payload.starts_with(b"{\"to\""));
    }
    group.throughput(Throughput::Bytes(ENQUEUE_BODY.len() as u64));
    group.bench_function("enqueue_members/serde_json", |b| b.iter(|| members_serde_json(black_box(ENQUEUE_BODY))));
    group.bench_function("enqueue_members/sonic_rs", |b| b.iter(|| members_sonic(black_box(ENQUEUE_BODY))));
    group.bench_function("enqueue_typed/serde_json", |b| b.iter(|| typed_serde_json(black_box(ENQUEUE_BODY))));
    group.bench_function("enqueue_typed/sonic_rs", |b| b.iter(|| typed_sonic(black_box(ENQUEUE_BODY))));

    let request = format!(
        "POST /v1/queues/emails/tasks HTTP/1.1\r\nHost: 127.0.0.1:7700\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{ENQUEUE_BODY}",
        ENQUEUE_BODY.len()
    );
    let limits = Limits::default();
    assert!(matches!(next_request(request.as_bytes(), &limits), Next::Request { action: Action::Execute(_), .. }));
    group.throughput(Throughput::Bytes(request.len() as u64));
    group.bench_function("enqueue_request/tqx_http", |b| {
        b.iter(|| next_request(black_box(request.as_bytes()), &limits))
    });

    for count in [1u64, 10] {
        let tasks = leased_tasks(count);
        let body = reply_body(&tasks);
        let by_serde_json: ReplySerdeJson = serde_json::from_str(&body).expect("serde_json reads the reply");
        let by_sonic: ReplySonic = sonic_rs::from_str(&body).expect("sonic-rs reads the reply");
        assert_eq!(by_serde_json.tasks.len(), count as usize);
        assert_eq!(by_sonic.tasks.len(), count as usize);
        // Both write the same text as the hand-written renderer.
        assert_eq!(serde_json::to_string(&by_serde_json).expect("serde_json writes"), body);
        assert_eq!(sonic_rs::to_string(&by_sonic).expect("sonic-rs writes"), body);

        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("dequeue_reply_parse/serde_json", count), &body, |b, body| {
            b.iter(|| serde_json::from_str::<ReplySerdeJson>(black_box(body)).expect("parse"))
        });
        group.bench_with_input(BenchmarkId::new("dequeue_reply_parse/sonic_rs", count), &body, |b, body| {
            b.iter(|| sonic_rs::from_str::<ReplySonic>(black_box(body)).expect("parse"))
        });
        let mut out = Vec::with_capacity(body.len() + 256);
        group.bench_function(BenchmarkId::new("dequeue_reply_render/serde_json", count), |b| {
            b.iter(|| {
                out.clear();
                serde_json::to_writer(&mut out, black_box(&by_serde_json)).expect("write");
            })
        });
        group.bench_function(BenchmarkId::new("dequeue_reply_render/sonic_rs", count), |b| {
            b.iter(|| {
                out.clear();
                sonic_rs::to_writer(&mut out, black_box(&by_sonic)).expect("write");
            })
        });
        let reply = Reply::Leased(tasks);
        group.bench_function(BenchmarkId::new("dequeue_reply_render/tqx_http", count), |b| {
            b.iter(|| {
                out.clear();
                render_reply(black_box(&reply), true, &mut out);
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short defaults for a shared 2-core machine; command-line options override.
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = json_benches
}
criterion_main!(benches);
