//! `tqx-bench hold`: opens many connections (handshakes done), keeps them open
//! for a while, idle or each sending one enqueue every `1 / rate_per_conn`
//! seconds, so that an orchestrator can measure what connections cost the
//! server (issue 7: RSS per connection, time to accept 10,000 at once, p99 of
//! enqueues at 10,000 connections × 1 request/s).
//!
//! The connections are those of `run`: the same `open` (connect, TCP_NODELAY,
//! handshake), and, when sending, the same driver on the open loop (latency from
//! the scheduled send time, so corrected for coordinated omission) with the
//! same producer workload. One difference: a sending connection is woken for
//! each send by one clock shared by all ([`shared_clock`], one timerfd) rather
//! than by a timerfd of its own, so that 10,000 connections fit in a 20,000
//! descriptor limit.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;

use super::codec::{Codec, Role};
use super::driver::Mode;
use super::stats::{self, ConnStats, Latency, Window};
use super::timer::{PreciseTimer, Wake};
use super::workload::Producer;
use super::{beanstalk, binary, http, resp, RunConfig, RunError, Scenario, System, PAYLOAD_BYTES_MAX};

/// Connections one `hold` may open: below the ~28,000 ephemeral ports of
/// Linux's default range (32768–60999) for one destination, and within
/// [`super::fdlimit::NOFILE_WANTED`] at two descriptors each.
pub const HOLD_CONNECTIONS_MAX: usize = 25_000;
/// Requests per second per connection, at most: `hold` is about many slow
/// connections; `run` is for fast ones.
pub const HOLD_RATE_PER_CONN_MAX: f64 = 1_000.0;
/// Longest hold, in seconds (a day).
const HOLD_SECONDS_MAX: f64 = 86_400.0;
/// Bytes an idle connection reads at once: it expects nothing, and only
/// watches for the server closing it.
const IDLE_READ_BYTES: usize = 64;

/// `tqx-bench hold`'s parameters.
#[derive(Clone, Debug)]
pub struct HoldConfig {
    pub system: System,
    pub addr: String,
    pub connections: usize,
    pub seconds: f64,
    /// Enqueues per second on each connection; `None`: idle connections.
    pub rate_per_conn: Option<f64>,
    pub payload_bytes: usize,
    pub queue: String,
    pub security: super::Security,
}

impl HoldConfig {
    fn validate(&self) -> Result<(), RunError> {
        let usage = |m: String| Err(RunError::Usage(m));
        if !(1..=HOLD_CONNECTIONS_MAX).contains(&self.connections) {
            return usage(format!("--connections must be 1 to {HOLD_CONNECTIONS_MAX}"));
        }
        if !(self.seconds.is_finite() && self.seconds > 0.0 && self.seconds <= HOLD_SECONDS_MAX) {
            return usage("--seconds must be above 0 (and at most a day)".into());
        }
        if let Some(rate) = self.rate_per_conn {
            if !(rate.is_finite() && rate > 0.0 && rate <= HOLD_RATE_PER_CONN_MAX) {
                return usage(format!("--rate-per-conn must be above 0 and at most {HOLD_RATE_PER_CONN_MAX}"));
            }
        }
        if !(1..=PAYLOAD_BYTES_MAX).contains(&self.payload_bytes) {
            return usage(format!("--payload-bytes must be 1 to {PAYLOAD_BYTES_MAX}"));
        }
        super::check_queue(&self.queue)?;
        self.security.check(self.system)
    }

    /// The `run` configuration whose codec parameters and setup `hold` reuses.
    fn run_config(&self) -> RunConfig {
        let mut config = RunConfig::new(self.system, &self.addr, Scenario::Enqueue);
        config.payload_bytes = self.payload_bytes;
        config.queue = self.queue.clone();
        config.connections = self.connections;
        config.seconds = self.seconds;
        config.warmup_seconds = 0.0;
        config.security = self.security.clone();
        config
    }
}

/// The one JSON line `tqx-bench hold` prints.
#[derive(Clone, Debug, Serialize)]
pub struct HoldReport {
    pub system: &'static str,
    /// Connections asked for.
    pub connections: usize,
    /// Connections opened with their handshake done.
    pub opened: usize,
    /// From the first connect to the last handshake reply, all connecting at once.
    pub open_seconds: f64,
    /// How long they were held after that.
    pub seconds: f64,
    pub rate_per_conn: Option<f64>,
    /// Enqueues answered during the hold (0 when idle).
    pub ops: u64,
    pub ops_per_s: f64,
    /// Connections that failed to open, error replies, and connections lost.
    pub errors: u64,
    /// Enqueue latency from the scheduled send time; `None` when idle.
    pub latency_us: Option<Latency>,
    /// CPU time of the load generator's thread during the hold, as a fraction
    /// of one core.
    pub client_cpu: f64,
}

/// Opens `connections` connections, prints `holding N connections` on stderr
/// once all are open (or failed), holds them for `seconds`, and reports.
pub fn hold(config: &HoldConfig) -> Result<HoldReport, RunError> {
    config.validate()?;
    let addr = super::resolve(&config.addr)?;
    super::on_one_thread(async {
        match config.system {
            System::TqxBinary => hold_with::<binary::BinaryCodec>(config, addr).await,
            System::TqxHttp => hold_with::<http::HttpCodec>(config, addr).await,
            System::Redis | System::RedisReliable => hold_with::<resp::RespCodec>(config, addr).await,
            System::Beanstalkd => hold_with::<beanstalk::BeanstalkCodec>(config, addr).await,
            System::RabbitMq => hold_with::<super::amqp::AmqpCodec>(config, addr).await,
            System::Nats => hold_with::<super::nats::NatsCodec>(config, addr).await,
        }
    })
}

async fn hold_with<C: Codec + 'static>(config: &HoldConfig, addr: SocketAddr) -> Result<HoldReport, RunError> {
    let run_config = config.run_config();
    let params = super::codec_params(&run_config)?;
    // Wait until the server is ready (it may be recovering), on a connection
    // that is closed before the held ones open, so it is not counted.
    drop(super::setup::<C>(&run_config, addr).await?);

    let open_start = Instant::now();
    let mut handles = Vec::with_capacity(config.connections);
    for _ in 0..config.connections {
        let params = params.clone();
        handles.push(tokio::task::spawn_local(async move { super::open::<C>(addr, &params, Role::Producer).await }));
    }
    let mut opened = Vec::with_capacity(config.connections);
    let mut errors = 0u64;
    for handle in handles {
        match handle.await {
            Ok(Ok(connection)) => opened.push(connection),
            Ok(Err(e)) => {
                errors += 1;
                stats::log_error(&format!("opening a connection: {e}"));
            }
            Err(e) => return Err(RunError::Failed(format!("connect task: {e}"))),
        }
    }
    let open_seconds = open_start.elapsed().as_secs_f64();
    // The orchestrator measures the server's memory when it reads this line.
    eprintln!("holding {} connections", opened.len());

    let count = opened.len();
    let t0 = Instant::now();
    let window = Window { measure_start: t0, end: t0 + Duration::from_secs_f64(config.seconds) };
    let cpu_start = stats::thread_cpu_seconds();
    // Connection i sends at first[i] + k × interval: the first sends spread
    // over one period, as `run`'s open loop spreads them (i / total rate).
    let (firsts, interval) = match config.rate_per_conn {
        Some(rate) => (
            (0..count).map(|i| t0 + Duration::from_secs_f64(i as f64 / (count as f64 * rate))).collect(),
            Duration::from_secs_f64(1.0 / rate),
        ),
        None => (Vec::new(), Duration::ZERO),
    };
    let notifies: Rc<Vec<Notify>> = Rc::new((0..count).map(|_| Notify::new()).collect());
    let clock = (config.rate_per_conn.is_some() && count > 0).then(|| {
        let (notifies, firsts) = (notifies.clone(), firsts.clone());
        tokio::task::spawn_local(async move { shared_clock(&notifies, &firsts, interval, window.end).await })
    });
    let histogram = stats::shared_histogram();
    let mut tasks = Vec::with_capacity(count);
    for (index, (mut stream, mut session)) in opened.into_iter().enumerate() {
        let rate = config.rate_per_conn;
        let first = firsts.get(index).copied().unwrap_or(t0);
        let notifies = notifies.clone();
        let histogram = histogram.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let mut stats = ConnStats::sharing(window, histogram);
            match rate {
                None => {
                    // Session buffers are not needed to sit idle.
                    drop(session);
                    if let Err(e) = watch_idle(&mut stream, window.end).await {
                        stats.errors += 1;
                        stats::log_error(&e);
                    }
                }
                Some(_) => {
                    let mode = Mode::Paced { first, interval };
                    let mut workload = Producer { batch: None, counted: true };
                    let wake = &notifies[index];
                    if let Err(e) = session.run(&mut stream, &mut workload, mode, &mut stats, wake).await {
                        stats.errors += 1;
                        stats::log_error(&e.to_string());
                    }
                }
            }
            stats
        }));
    }
    let mut all = Vec::with_capacity(count);
    for task in tasks {
        all.push(task.await.map_err(|e| RunError::Failed(format!("connection task: {e}")))?);
    }
    if let Some(clock) = clock {
        clock
            .await
            .map_err(|e| RunError::Failed(format!("clock task: {e}")))?
            .map_err(|e| RunError::Failed(format!("clock: {e}")))?;
    }
    let cpu_seconds = stats::thread_cpu_seconds() - cpu_start;
    let (histogram, ops, _tasks, conn_errors) = stats::merge(&all);
    Ok(HoldReport {
        system: config.system.name(),
        connections: config.connections,
        opened: count,
        open_seconds: stats::rounded(open_seconds, 3),
        seconds: stats::rounded(config.seconds, 3),
        rate_per_conn: config.rate_per_conn,
        ops,
        ops_per_s: stats::rounded(ops as f64 / config.seconds, 1),
        errors: errors + conn_errors,
        latency_us: config.rate_per_conn.map(|_| stats::latency_us(&histogram)),
        client_cpu: stats::rounded(cpu_seconds / config.seconds, 3),
    })
}

/// Waits until `end`; an idle connection that the server closes (or that
/// receives anything: nothing was asked) is an error.
async fn watch_idle(stream: &mut super::stream::Stream, end: Instant) -> Result<(), String> {
    let mut buf = [0u8; IDLE_READ_BYTES];
    match tokio::time::timeout_at(end.into(), stream.read(&mut buf)).await {
        Err(_elapsed) => Ok(()),
        Ok(Ok(0)) => Err("the server closed an idle connection".into()),
        Ok(Ok(n)) => Err(format!("an idle connection received {n} unasked bytes")),
        Ok(Err(e)) => Err(format!("an idle connection failed: {e}")),
    }
}

/// Wakes connection i at `firsts[i] + k × interval` for every k before `end`
/// (the instants its `Mode::Paced` schedule computes, to the nanosecond), in
/// time order, on one timerfd. Sends that fall due together are woken
/// together; a late wake-up still counts against the latency, which runs from
/// the schedule.
async fn shared_clock(
    notifies: &[Notify],
    firsts: &[Instant],
    interval: Duration,
    end: Instant,
) -> std::io::Result<()> {
    let count = firsts.len() as u64;
    if count == 0 {
        return Ok(());
    }
    let mut timer = PreciseTimer::new()?;
    // Sends are ordered by time: connection i's k-th send is the (k × count + i)-th,
    // because every first send falls within one interval of t0.
    for n in 0u64.. {
        let (i, k) = ((n % count) as usize, n / count);
        let Some(at) = u32::try_from(k).ok().and_then(|k| interval.checked_mul(k)).map(|d| firsts[i] + d) else {
            return Ok(());
        };
        if at >= end {
            return Ok(());
        }
        timer.wait(Wake::At(at)).await?;
        notifies[i].notify_one();
    }
    Ok(())
}
