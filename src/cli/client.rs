//! The client subcommands (`enqueue`, `dequeue`, `complete`, `queue ...`,
//! `tasks`, `retry`, `top`, ...): their arguments, and how each becomes one
//! [`Op`] sent over HTTP or `--binary` ([`super::transport`]) and printed
//! ([`super::output`]). Exit codes: [`super::exit`] (docs/cli.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::batch::BatchArgs;
use super::body;
use super::exit::{Exit, Failure};
use super::output::{self, View};
use super::top::TopArgs;
use super::transport::{Op, QueueSettings, Target, TaskBody, Transport};

// Each variant's doc comment is its line in `tqx --help` (the enum is
// flattened into the top-level command list, between `serve` and `demo`).
#[derive(Subcommand)]
pub(super) enum ClientCommand {
    /// Add a task to a queue (created with defaults if it does not exist).
    Enqueue(EnqueueArgs),
    /// Add the tasks of a JSON Lines file (or `-`, standard input), one per line, in batches.
    EnqueueBatch(BatchArgs),
    /// Lease tasks from one or more queues, taken in the order given.
    Dequeue(DequeueArgs),
    /// Complete a leased task.
    Complete(CompleteArgs),
    /// Fail a leased task: it is retried with backoff, or dead once out of attempts.
    Fail(FailArgs),
    /// Extend a task's lease.
    Extend(ExtendArgs),
    /// Cancel a task (and, transitively, the tasks that depend on it).
    Cancel(TaskArgs),
    /// Show a task.
    Task(TaskArgs),
    /// List the queues with their counts (as `tqx queue list`).
    Queues(ServerOpt),
    /// Queue administration: create, configure, list, stats, delete (`tqx queue NAME` shows one queue).
    Queue(QueueCommand),
    /// List a queue's tasks in one state (dead by default), one page in id order; pass the printed
    /// cursor to --cursor for the next page.
    Tasks(TasksArgs),
    /// Retry a dead task: back to ready with fresh attempts.
    Retry(TaskArgs),
    /// Delete a finished task (dead, completed or cancelled) now, before its retention ends.
    Delete(TaskArgs),
    /// A live view of the queues (depth by state) and rates, refreshed each second; q or Ctrl-C quits.
    Top(TopArgs),
}

#[derive(Args, Debug, Clone)]
pub(super) struct ServerOpt {
    /// Server URL [env: TQX_SERVER] [default: http://127.0.0.1:7700]; with --binary, HOST:PORT
    /// [default: 127.0.0.1:7701].
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Use the binary protocol (`tqx serve --binary`) instead of HTTP; the output is the same.
    #[arg(long)]
    pub binary: bool,
    /// Print the server's JSON reply exactly, one document per line, instead of a table or indented JSON.
    #[arg(long)]
    pub json: bool,
    /// TLS: trust the CA certificates in this PEM file for the server's certificate (a server started
    /// with --tls-cert). Over HTTP the server URL is then https://; with --binary it turns TLS on.
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// Mutual TLS: present this client certificate (PEM; with --tls-key and --tls-ca).
    #[arg(long, value_name = "PEM", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// API token for a server with `--tokens` [env: TQX_TOKEN] (prefer the variable: arguments are
    /// visible to other users in the process list).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
}

impl ServerOpt {
    /// Where to connect and with what (`--token`, else `TQX_TOKEN` when set and not blank).
    pub(super) fn target(&self) -> Target {
        Target {
            server: self.server.clone(),
            binary: self.binary,
            tls_ca: self.tls_ca.clone(),
            identity: self.tls_cert.clone().zip(self.tls_key.clone()),
            token: self.token.clone().or_else(|| std::env::var("TQX_TOKEN").ok().filter(|s| !s.trim().is_empty())),
        }
    }
}

#[derive(Args, Debug)]
pub(super) struct EnqueueArgs {
    /// Queue name (A-Z a-z 0-9 _ - . :).
    queue: String,
    /// The task's payload: JSON text (e.g. '{"to":"a@b.c"}'; a string needs its quotes: '"hi"'),
    /// @FILE for a file's contents, or - for standard input. Text that is not JSON is refused
    /// (exit 2, naming the line and column) unless --raw is given.
    #[arg(allow_negative_numbers = true)]
    payload: String,
    /// Send the payload as it is, unchecked: over HTTP as a JSON string of the exact text, over
    /// --binary as the exact bytes.
    #[arg(long)]
    raw: bool,
    /// Priority (higher first, in `priority` queues).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    priority: Option<i32>,
    /// Group key (for round-robin queues and group concurrency limits).
    #[arg(long, value_name = "G")]
    group: Option<String>,
    /// Hold the task this long before it is ready.
    #[arg(long, value_name = "MS")]
    delay_ms: Option<u64>,
    /// Attempts before the task is dead (default: the queue's).
    #[arg(long, value_name = "N")]
    max_attempts: Option<u32>,
    /// Wait for this task to complete first (repeat, or separate ids with commas).
    #[arg(long, value_name = "ID", value_delimiter = ',')]
    depends_on: Vec<u64>,
    /// Idempotency key: enqueueing the same key again returns the original task.
    #[arg(long, value_name = "K")]
    key: Option<String>,
    #[command(flatten)]
    server: ServerOpt,
}

#[derive(Args, Debug)]
pub(super) struct DequeueArgs {
    /// Queues to take from, in order (1 to 64).
    #[arg(required = true, value_name = "QUEUE")]
    queues: Vec<String>,
    /// Most tasks to lease (1 to 1000; server default 1).
    #[arg(long, value_name = "N")]
    max: Option<u32>,
    /// Lease length (default: each queue's).
    #[arg(long, value_name = "MS")]
    lease_ms: Option<u64>,
    /// Wait up to this long for a task when none is ready (at most 60000).
    #[arg(long, value_name = "MS")]
    wait_ms: Option<u64>,
    #[command(flatten)]
    server: ServerOpt,
}

#[derive(Args, Debug)]
pub(super) struct CompleteArgs {
    /// Task id.
    id: u64,
    /// Lease token from the dequeue.
    lease: u64,
    /// The result: JSON text, @FILE or - (standard input); text that is not JSON is refused unless
    /// --raw is given.
    #[arg(long, value_name = "JSON", allow_negative_numbers = true)]
    result: Option<String>,
    /// Send the result as it is, unchecked (as `enqueue --raw`).
    #[arg(long, requires = "result")]
    raw: bool,
    #[command(flatten)]
    server: ServerOpt,
}

#[derive(Args, Debug)]
pub(super) struct FailArgs {
    /// Task id.
    id: u64,
    /// Lease token from the dequeue.
    lease: u64,
    /// Error message, kept with the task.
    error: String,
    /// Do not retry: the task is dead at once.
    #[arg(long)]
    no_retry: bool,
    #[command(flatten)]
    server: ServerOpt,
}

#[derive(Args, Debug)]
pub(super) struct ExtendArgs {
    /// Task id.
    id: u64,
    /// Lease token from the dequeue.
    lease: u64,
    /// New lease length, counted from now.
    lease_ms: u64,
    #[command(flatten)]
    server: ServerOpt,
}

#[derive(Args, Debug)]
pub(super) struct TaskArgs {
    /// Task id.
    id: u64,
    #[command(flatten)]
    server: ServerOpt,
}

#[derive(Args, Debug)]
pub(super) struct TasksArgs {
    /// Queue name.
    queue: String,
    /// Which tasks: waiting, delayed, ready, leased, completed, dead or cancelled.
    #[arg(long, value_name = "STATE", default_value = "dead", value_parser = parse_state)]
    state: crate::engine::TaskState,
    /// Most tasks on the page (1 to 1000; server default 100).
    #[arg(long, value_name = "N")]
    limit: Option<u16>,
    /// Where to continue: the cursor the previous page printed (its next_cursor).
    #[arg(long, value_name = "CURSOR")]
    cursor: Option<String>,
    #[command(flatten)]
    server: ServerOpt,
}

fn parse_state(text: &str) -> Result<crate::engine::TaskState, String> {
    crate::engine::TaskState::parse(text)
        .ok_or_else(|| "expected waiting, delayed, ready, leased, completed, dead or cancelled".to_string())
}

/// `tqx queue NAME` (one queue, as `queue stats NAME`) or `tqx queue ACTION ...`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_precedence_over_arg = true, arg_required_else_help = true)]
pub(super) struct QueueCommand {
    #[command(subcommand)]
    action: Option<QueueAction>,
    /// Show this queue's settings and counts (as `tqx queue stats NAME`).
    name: Option<String>,
    #[command(flatten)]
    server: ServerOpt,
}

#[derive(Subcommand, Debug)]
pub(super) enum QueueAction {
    /// Create a queue, or change the settings given of one that exists (PUT /v1/queues/NAME).
    Create(QueueSettingsArgs),
    /// Change the settings given of a queue that exists (exit 3 if it does not).
    Configure(QueueSettingsArgs),
    /// List the queues with their counts.
    List(ServerOpt),
    /// Show one queue's settings and counts.
    Stats(QueueNameArgs),
    /// Delete a queue; it must hold no unfinished task unless --force (which cancels them).
    Delete(QueueDeleteArgs),
}

#[derive(Args, Debug)]
pub(super) struct QueueNameArgs {
    /// Queue name.
    name: String,
    #[command(flatten)]
    server: ServerOpt,
}

#[derive(Args, Debug)]
pub(super) struct QueueDeleteArgs {
    /// Queue name.
    name: String,
    /// Cancel the queue's unfinished tasks (and their dependents) and delete it anyway.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    server: ServerOpt,
}

/// A queue's settings (docs/http-api.md, `PUT /v1/queues/{queue}`); those not
/// given are left as they are (a new queue gets the defaults).
#[derive(Args, Debug)]
pub(super) struct QueueSettingsArgs {
    /// Queue name (A-Z a-z 0-9 _ - . :).
    name: String,
    /// Which ready task a dequeue gets: fifo, lifo, priority or round_robin.
    #[arg(long, value_name = "MODE", value_parser = parse_discipline)]
    mode: Option<crate::engine::Discipline>,
    /// Lease granted by a dequeue that does not ask for its own.
    #[arg(long, value_name = "MS")]
    lease_ms: Option<u64>,
    /// Attempts before a task is dead.
    #[arg(long, value_name = "N")]
    max_attempts: Option<u32>,
    /// First retry delay (doubled each attempt, with jitter).
    #[arg(long, value_name = "MS")]
    backoff_ms: Option<u64>,
    /// Longest retry delay.
    #[arg(long, value_name = "MS")]
    backoff_max_ms: Option<u64>,
    /// How long completed and cancelled tasks are kept.
    #[arg(long, value_name = "MS")]
    retention_ms: Option<u64>,
    /// How long dead tasks are kept.
    #[arg(long, value_name = "MS")]
    dead_retention_ms: Option<u64>,
    /// Most tasks of one group leased at once, or `none` to remove the limit.
    #[arg(long, value_name = "N|none", value_parser = parse_group_concurrency)]
    group_concurrency: Option<GroupLimit>,
    #[command(flatten)]
    server: ServerOpt,
}

fn parse_discipline(text: &str) -> Result<crate::engine::Discipline, String> {
    crate::engine::Discipline::parse(&text.replace('-', "_"))
        .ok_or_else(|| "expected fifo, lifo, priority or round_robin".to_string())
}

/// `--group-concurrency`: a limit, or none (a newtype: clap reads
/// `Option<Option<T>>` as a flag whose value is optional).
#[derive(Clone, Copy, Debug)]
pub(super) struct GroupLimit(Option<u32>);

fn parse_group_concurrency(text: &str) -> Result<GroupLimit, String> {
    if text == "none" {
        return Ok(GroupLimit(None));
    }
    text.parse::<u32>().map(|n| GroupLimit(Some(n))).map_err(|_| "expected a number of tasks, or none".to_string())
}

impl QueueSettingsArgs {
    fn settings(&self) -> QueueSettings {
        QueueSettings {
            discipline: self.mode,
            lease_ms: self.lease_ms,
            max_attempts: self.max_attempts,
            backoff_ms: self.backoff_ms,
            backoff_max_ms: self.backoff_max_ms,
            retention_ms: self.retention_ms,
            dead_retention_ms: self.dead_retention_ms,
            group_concurrency: self.group_concurrency.map(|limit| limit.0),
        }
    }
}

impl ClientCommand {
    /// Runs the subcommand; its exit code is the process's ([`Exit`]).
    pub(super) fn run(self) -> ExitCode {
        let name = self.name();
        match self.execute() {
            Ok(()) => ExitCode::SUCCESS,
            Err(failure) => failure.report(name),
        }
    }

    /// The subcommand's name, as messages print it (`tqx NAME: ...`).
    fn name(&self) -> &'static str {
        match self {
            ClientCommand::Enqueue(_) => "enqueue",
            ClientCommand::EnqueueBatch(_) => "enqueue-batch",
            ClientCommand::Dequeue(_) => "dequeue",
            ClientCommand::Complete(_) => "complete",
            ClientCommand::Fail(_) => "fail",
            ClientCommand::Extend(_) => "extend",
            ClientCommand::Cancel(_) => "cancel",
            ClientCommand::Task(_) => "task",
            ClientCommand::Queues(_) => "queues",
            ClientCommand::Queue(command) => match &command.action {
                None => "queue",
                Some(QueueAction::Create(_)) => "queue create",
                Some(QueueAction::Configure(_)) => "queue configure",
                Some(QueueAction::List(_)) => "queue list",
                Some(QueueAction::Stats(_)) => "queue stats",
                Some(QueueAction::Delete(_)) => "queue delete",
            },
            ClientCommand::Tasks(_) => "tasks",
            ClientCommand::Retry(_) => "retry",
            ClientCommand::Delete(_) => "delete",
            ClientCommand::Top(_) => "top",
        }
    }

    fn execute(self) -> Result<(), Failure> {
        let (server, op, view) = match self {
            ClientCommand::EnqueueBatch(args) => return super::batch::run(args),
            ClientCommand::Top(args) => return super::top::run(args),
            ClientCommand::Queue(QueueCommand { action: Some(QueueAction::Configure(args)), .. }) => {
                return configure(args)
            }
            other => other.single_op()?,
        };
        // Bodies are read and checked before anything is connected.
        let transport = Transport::open(&server.target())?;
        let body = transport.call(op)?;
        output::print(view, &body, server.json);
        Ok(())
    }

    /// The one request the subcommand makes, and how its reply is shown.
    fn single_op(self) -> Result<(ServerOpt, Op, View), Failure> {
        Ok(match self {
            ClientCommand::Enqueue(a) => {
                let task = TaskBody {
                    payload: body::body(&a.payload, a.raw, a.server.binary, "payload")?,
                    priority: a.priority,
                    group: a.group,
                    delay_ms: a.delay_ms,
                    max_attempts: a.max_attempts,
                    depends_on: a.depends_on,
                    key: a.key,
                };
                (a.server, Op::Enqueue { queue: a.queue, task }, View::Json)
            }
            ClientCommand::Dequeue(a) => {
                let op = Op::Dequeue { queues: a.queues, max: a.max, lease_ms: a.lease_ms, wait_ms: a.wait_ms };
                (a.server, op, View::Json)
            }
            ClientCommand::Complete(a) => {
                let result =
                    a.result.as_deref().map(|r| body::body(r, a.raw, a.server.binary, "result")).transpose()?;
                (a.server, Op::Complete { id: a.id, lease: a.lease, result }, View::Json)
            }
            ClientCommand::Fail(a) => {
                (a.server, Op::Fail { id: a.id, lease: a.lease, error: a.error, retry: !a.no_retry }, View::Json)
            }
            ClientCommand::Extend(a) => {
                (a.server, Op::Extend { id: a.id, lease: a.lease, lease_ms: a.lease_ms }, View::Json)
            }
            ClientCommand::Cancel(a) => (a.server, Op::Cancel(a.id), View::Json),
            ClientCommand::Task(a) => (a.server, Op::GetTask(a.id), View::Json),
            ClientCommand::Queues(server) => (server, Op::ListQueues, View::Queues),
            ClientCommand::Queue(command) => match command.action {
                None => {
                    // arg_required_else_help: clap shows the help without a name or an action.
                    let name = command.name.unwrap_or_default();
                    (command.server, Op::GetQueue(name), View::Queue)
                }
                Some(QueueAction::Create(a)) => {
                    let op = Op::ConfigureQueue(a.name.clone(), a.settings());
                    (a.server, op, View::Queue)
                }
                Some(QueueAction::List(server)) => (server, Op::ListQueues, View::Queues),
                Some(QueueAction::Stats(a)) => (a.server, Op::GetQueue(a.name), View::Queue),
                Some(QueueAction::Delete(a)) => {
                    (a.server, Op::DeleteQueue { queue: a.name, force: a.force }, View::Json)
                }
                Some(QueueAction::Configure(_)) => unreachable!("handled by execute"),
            },
            ClientCommand::Tasks(a) => {
                let op = Op::ListTasks { queue: a.queue, state: a.state, limit: a.limit, cursor: a.cursor };
                (a.server, op, View::Tasks)
            }
            ClientCommand::Retry(a) => (a.server, Op::Retry(a.id), View::Json),
            ClientCommand::Delete(a) => (a.server, Op::DeleteTask(a.id), View::Json),
            ClientCommand::EnqueueBatch(_) | ClientCommand::Top(_) => unreachable!("handled by execute"),
        })
    }
}

/// `tqx queue configure`: the queue must exist (a mistyped name would
/// otherwise create a new queue), so it is looked up first, then changed. A
/// queue deleted between the two is created again with these settings.
fn configure(args: QueueSettingsArgs) -> Result<(), Failure> {
    let transport = Transport::open(&args.server.target())?;
    transport.call(Op::GetQueue(args.name.clone())).map_err(|failure| match failure.exit {
        Exit::NotFound => {
            Failure::new(Exit::NotFound, format!("{}\n(`tqx queue create {}` creates it)", failure.message, args.name))
        }
        _ => failure,
    })?;
    let body = transport.call(Op::ConfigureQueue(args.name.clone(), args.settings()))?;
    output::print(View::Queue, &body, args.server.json);
    Ok(())
}
