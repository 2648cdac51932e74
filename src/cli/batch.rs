//! `tqx enqueue-batch QUEUE FILE|-`: the tasks of a JSON Lines file, sent in
//! batches (`POST /v1/queues/{q}/tasks/batch`, the binary `enqueue_batch`).
//!
//! Each line is one task's payload (any JSON value), or with `--tasks` one
//! task object as `POST /v1/queues/{q}/tasks` takes it (`payload` required;
//! `priority`, `group`, `delay_ms`, `max_attempts`, `depends_on` (ids of tasks
//! that exist), `key`; nothing else). Blank lines are skipped. The whole
//! input is read and checked first: a line that is not valid is reported with
//! its number and nothing is sent. Then batches of at most `--batch-size`
//! tasks and [`BATCH_BYTES_MAX`] bytes go one after another; each is all or
//! nothing on the server, so when one is refused the batches before it are
//! enqueued, it and everything after it are not, and the message says which
//! lines that is. A file is read twice (check, then send), so it is never
//! held whole in memory; standard input is held, up to [`STDIN_BYTES_MAX`].

use std::io::{BufRead, BufReader, IsTerminal as _, Read as _};

use bytes::Bytes;
use clap::Args;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::body::{self, BODY_BYTES_MAX};
use super::client::ServerOpt;
use super::exit::Failure;
use super::transport::{Op, TaskBody, Transport};

/// The most of standard input held to be checked and then sent.
const STDIN_BYTES_MAX: u64 = 256 << 20;
/// Bytes of tasks in one batch: half the server's default `--max-body-bytes`
/// (1 MiB), so a batch fits with room for the JSON or frame around it. A
/// single task larger than this goes alone.
pub(super) const BATCH_BYTES_MAX: usize = 512 << 10;
/// What a task costs in a batch besides its payload, group and key (the
/// JSON members or frame fields around them), for [`BATCH_BYTES_MAX`].
const TASK_OVERHEAD_BYTES: usize = 96;

#[derive(Args, Debug)]
pub(super) struct BatchArgs {
    /// Queue name (created with defaults if it does not exist).
    queue: String,
    /// The JSON Lines file, or - for standard input.
    file: String,
    /// Each line is a task object ({"payload": .., "priority": .., "group": .., "delay_ms": ..,
    /// "max_attempts": .., "depends_on": [ids], "key": ..}) instead of a payload.
    #[arg(long)]
    tasks: bool,
    /// Most tasks per batch (1 to 10000); a batch also stops at 512 KiB.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=crate::limits::BATCH_TASKS_COUNT_MAX as i64))]
    batch_size: u32,
    #[command(flatten)]
    server: ServerOpt,
}

/// A task object line (`--tasks`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskLine<'a> {
    #[serde(borrow)]
    payload: &'a RawValue,
    priority: Option<i32>,
    group: Option<String>,
    delay_ms: Option<u64>,
    max_attempts: Option<u32>,
    #[serde(default)]
    depends_on: Vec<IdJson>,
    key: Option<String>,
}

/// A task id, as a string (`"42"`, what the server prints) or a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum IdJson {
    Number(u64),
    Text(String),
}

/// The task on line `text` (`Ok(None)`: a blank line), or why it is not one.
fn parse_line(text: &[u8], tasks: bool) -> Result<Option<TaskBody>, String> {
    let Ok(text) = std::str::from_utf8(text) else { return Err("not UTF-8".to_string()) };
    if text.trim().is_empty() {
        return Ok(None);
    }
    // serde_json's message without its "at line 1 column C": a line has one line.
    let position = |error: serde_json::Error| {
        let message = error.to_string();
        let suffix = format!(" at line {} column {}", error.line(), error.column());
        format!("column {}: {}", error.column(), message.strip_suffix(&suffix).unwrap_or(&message))
    };
    if !tasks {
        let payload = body::strict_json(text.as_bytes()).map_err(position)?;
        return Ok(Some(TaskBody { payload: Bytes::copy_from_slice(payload), ..TaskBody::default() }));
    }
    let line: TaskLine = serde_json::from_str(text).map_err(position)?;
    let depends_on = line
        .depends_on
        .into_iter()
        .map(|id| match id {
            IdJson::Number(id) => Ok(id),
            IdJson::Text(text) => text.parse::<u64>().map_err(|_| {
                format!("depends_on: {text:?} is not a task id (batch references like \"#0\" are not taken here)")
            }),
        })
        .collect::<Result<Vec<u64>, String>>()?;
    Ok(Some(TaskBody {
        payload: Bytes::copy_from_slice(line.payload.get().as_bytes()),
        priority: line.priority,
        group: line.group,
        delay_ms: line.delay_ms,
        max_attempts: line.max_attempts,
        depends_on,
        key: line.key,
    }))
}

/// Calls `each(line_number, task)` for every task of `reader` in order;
/// stops at the first line that is not a task, naming it.
fn for_each_task(
    mut reader: impl BufRead,
    origin: &str,
    tasks: bool,
    mut each: impl FnMut(u64, TaskBody) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let mut line = Vec::new();
    for number in 1u64.. {
        line.clear();
        let read = (&mut reader)
            .take(BODY_BYTES_MAX + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| Failure::usage(format!("cannot read {origin}: {e}")))?;
        if read == 0 {
            break;
        }
        if line.len() as u64 > BODY_BYTES_MAX {
            return Err(Failure::usage(format!("{origin}, line {number}: longer than {BODY_BYTES_MAX} bytes")));
        }
        match parse_line(&line, tasks) {
            Ok(Some(task)) => each(number, task)?,
            Ok(None) => {}
            Err(reason) => {
                return Err(Failure::usage(format!("{origin}, line {number}, {reason}; nothing was sent")));
            }
        }
    }
    Ok(())
}

/// Where the lines come from: a file opened anew for each pass, or standard
/// input held in memory.
enum Input {
    File(String),
    Held(Vec<u8>),
}

impl Input {
    fn origin(&self) -> String {
        match self {
            Input::File(path) => path.clone(),
            Input::Held(_) => "standard input".to_string(),
        }
    }

    fn each(&self, tasks: bool, each: impl FnMut(u64, TaskBody) -> Result<(), Failure>) -> Result<(), Failure> {
        match self {
            Input::File(path) => {
                let file = std::fs::File::open(path).map_err(|e| Failure::usage(format!("cannot read {path}: {e}")))?;
                for_each_task(BufReader::new(file), path, tasks, each)
            }
            Input::Held(bytes) => for_each_task(&bytes[..], "standard input", tasks, each),
        }
    }
}

/// Bytes a task adds to a batch, for [`BATCH_BYTES_MAX`].
fn task_bytes(task: &TaskBody) -> usize {
    task.payload.len()
        + task.group.as_ref().map_or(0, String::len)
        + task.key.as_ref().map_or(0, String::len)
        + 24 * task.depends_on.len()
        + TASK_OVERHEAD_BYTES
}

pub(super) fn run(args: BatchArgs) -> Result<(), Failure> {
    let input = if args.file == "-" {
        let bytes = body::read_bounded(std::io::stdin().lock(), STDIN_BYTES_MAX)
            .map_err(|e| Failure::usage(format!("cannot read standard input: {e} (give a file instead of -)")))?;
        Input::Held(bytes)
    } else {
        Input::File(args.file.clone())
    };
    let origin = input.origin();
    // Pass 1: every line is checked before anything is sent.
    let mut total = 0u64;
    input.each(args.tasks, |_, _| {
        total += 1;
        Ok(())
    })?;
    let transport = Transport::open(&args.server.target())?;
    let progress = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr())
    } else {
        indicatif::ProgressBar::hidden()
    };
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {human_pos}/{human_len} tasks  {per_sec}  eta {eta}")
    {
        progress.set_style(style);
    }

    // Pass 2: the same lines, parsed again, sent in batches.
    let mut sender = Sender {
        transport: &transport,
        queue: &args.queue,
        json: args.server.json,
        batch: Vec::new(),
        batch_bytes: 0,
        batch_first_line: 0,
        last_line: 0,
        sent_tasks: 0,
        sent_batches: 0,
        sent_through_line: 0,
        progress: &progress,
    };
    let batch_size = args.batch_size as usize;
    input.each(args.tasks, |number, task| {
        let bytes = task_bytes(&task);
        if !sender.batch.is_empty()
            && (sender.batch.len() >= batch_size || sender.batch_bytes + bytes > BATCH_BYTES_MAX)
        {
            sender.send()?;
        }
        if sender.batch.is_empty() {
            sender.batch_first_line = number;
        }
        sender.batch.push(task);
        sender.batch_bytes += bytes;
        sender.last_line = number;
        Ok(())
    })?;
    sender.send()?;
    progress.finish_and_clear();
    if !args.server.json {
        let batches = if sender.sent_batches == 1 { "batch" } else { "batches" };
        println!(
            "enqueued {} tasks into {} in {} {batches} (from {origin})",
            sender.sent_tasks, args.queue, sender.sent_batches
        );
    }
    Ok(())
}

struct Sender<'a> {
    transport: &'a Transport,
    queue: &'a str,
    json: bool,
    batch: Vec<TaskBody>,
    batch_bytes: usize,
    batch_first_line: u64,
    last_line: u64,
    sent_tasks: u64,
    sent_batches: u64,
    sent_through_line: u64,
    progress: &'a indicatif::ProgressBar,
}

impl Sender<'_> {
    /// Sends the batch held (if any); on a refusal, says what was sent.
    fn send(&mut self) -> Result<(), Failure> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let tasks = std::mem::take(&mut self.batch);
        let count = tasks.len() as u64;
        self.batch_bytes = 0;
        match self.transport.call(Op::EnqueueBatch { queue: self.queue.to_string(), tasks }) {
            Ok(reply) => {
                if self.json {
                    println!("{}", String::from_utf8_lossy(&reply));
                }
                self.sent_tasks += count;
                self.sent_batches += 1;
                self.sent_through_line = self.last_line;
                self.progress.inc(count);
                Ok(())
            }
            Err(mut failure) => {
                self.progress.abandon();
                let before = if self.sent_batches == 0 {
                    "nothing was enqueued".to_string()
                } else {
                    let batches = if self.sent_batches == 1 { "batch" } else { "batches" };
                    format!(
                        "{} tasks (lines 1 to {}, {} {batches}) were enqueued",
                        self.sent_tasks, self.sent_through_line, self.sent_batches
                    )
                };
                let tasks = if count == 1 { "task" } else { "tasks" };
                failure.message.push_str(&format!(
                    "\n{before}; the batch of lines {} to {} ({count} {tasks}, tasks[0] is line {}) was refused \
                     whole, and nothing after it was sent",
                    self.batch_first_line, self.last_line, self.batch_first_line
                ));
                Err(failure)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_a_payload_or_with_tasks_a_task_object() {
        let task = parse_line(b" {\"to\": 1.50} \n", false).unwrap().unwrap();
        assert_eq!(&task.payload[..], b"{\"to\": 1.50}");
        assert!(parse_line(b"  \r\n", false).unwrap().is_none());
        let error = parse_line(b"{\"to\": nope}\n", false).unwrap_err();
        assert_eq!(error, "column 9: expected ident");

        let line = br#"{"payload": [1], "priority": -2, "depends_on": ["7", 8], "key": "k"}"#;
        let task = parse_line(line, true).unwrap().unwrap();
        assert_eq!(
            (&task.payload[..], task.priority, task.depends_on, task.key),
            (&b"[1]"[..], Some(-2), vec![7, 8], Some("k".into()))
        );
        for (bad, says) in [
            (&br#"{"priority": 1}"#[..], "missing field `payload`"),
            (br#"{"payload": 1, "colour": 2}"#, "unknown field `colour`"),
            (br##"{"payload": 1, "depends_on": ["#0"]}"##, "not a task id"),
        ] {
            let error = parse_line(bad, true).unwrap_err();
            assert!(error.contains(says), "{error}");
        }
    }
}
