//! How a reply is printed: with `--json`, the server's JSON document exactly,
//! one per line; otherwise a table for the list-like replies (queues, a
//! queue, a page of tasks) and the JSON indented for the rest (a task, a
//! dequeue's leases: every field matters there).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::http_client;

/// The shape of a reply, for its human form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum View {
    /// Indented JSON.
    Json,
    /// `{"queues": [queue objects]}`: one row per queue.
    Queues,
    /// One queue object: its settings and counts, one per line.
    Queue,
    /// `{"tasks": [...], "next_cursor": ..}`: one row per task.
    Tasks,
}

/// The states in the order tables show them (the engine's order).
pub(super) const STATES: [&str; 7] = ["waiting", "delayed", "ready", "leased", "completed", "dead", "cancelled"];

/// Prints one reply on stdout.
pub(super) fn print(view: View, body: &[u8], json: bool) {
    println!("{}", render(view, body, json));
}

/// The text [`print`] prints (without the final newline).
pub(super) fn render(view: View, body: &[u8], json: bool) -> String {
    let raw = || String::from_utf8_lossy(body).into_owned();
    if json {
        return raw();
    }
    let pretty = || http_client::pretty_json(body).unwrap_or_else(raw);
    let Ok(value) = serde_json::from_slice::<Value>(body) else { return raw() };
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let table = match view {
        View::Json => None,
        View::Queues => queues_table(&value),
        View::Queue => queue_lines(&value),
        View::Tasks => tasks_table(&value, now_ms),
    };
    table.unwrap_or_else(pretty)
}

/// A table with a header row: columns left-aligned, numbers right-aligned,
/// two spaces apart.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let numeric: Vec<bool> = (0..header.len())
        .map(|i| {
            let number = |cell: &String| cell.parse::<f64>().is_ok();
            rows.iter().any(|row| number(&row[i])) && rows.iter().all(|row| number(&row[i]) || row[i] == "-")
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|row| row[i].chars().count()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_uppercase()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i > 0 {
                line.push_str("  ");
            }
            if numeric[i] {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if i + 1 < row.len() {
                    line.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.pop();
    out
}

fn count(value: &Value) -> String {
    value.as_u64().map_or_else(|| "-".to_string(), |n| n.to_string())
}

/// One row per queue: name, discipline and its count in each state.
pub(super) fn queues_table(value: &Value) -> Option<String> {
    let queues = value["queues"].as_array()?;
    if queues.is_empty() {
        return Some("no queues".to_string());
    }
    let mut header = vec!["queue", "discipline"];
    header.extend(STATES);
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|queue| {
            let mut row = vec![
                queue["name"].as_str().unwrap_or("?").to_string(),
                queue["config"]["discipline"].as_str().unwrap_or("-").to_string(),
            ];
            row.extend(STATES.iter().map(|state| count(&queue["counts"][state])));
            row
        })
        .collect();
    Some(table(&header, &rows))
}

/// One queue: its name, each setting and each state's count, one per line.
fn queue_lines(value: &Value) -> Option<String> {
    let name = value["name"].as_str()?;
    let config = value["config"].as_object()?;
    let counts = value["counts"].as_object()?;
    let mut rows = vec![vec!["queue".to_string(), name.to_string()]];
    // The order of docs/http-api.md's queue object, then any other setting.
    const ORDER: [&str; 8] = crate::http::QUEUE_FIELDS;
    let rank = |key: &str| ORDER.iter().position(|k| *k == key).unwrap_or(ORDER.len());
    let mut settings: Vec<(&String, &Value)> = config.iter().collect();
    settings.sort_by_key(|(key, _)| rank(key));
    for (key, setting) in settings {
        let shown = match setting {
            Value::Null => "none".to_string(),
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        rows.push(vec![key.clone(), shown]);
    }
    for state in STATES {
        rows.push(vec![state.to_string(), count(&counts[state])]);
    }
    let width = rows.iter().map(|row| row[0].len()).max().unwrap_or(0);
    Some(rows.iter().map(|row| format!("{:width$}  {}", row[0], row[1])).collect::<Vec<_>>().join("\n"))
}

/// `ms` before `now_ms`, in the largest whole unit.
pub(super) fn age(ms: u64, now_ms: u64) -> String {
    let seconds = now_ms.saturating_sub(ms) / 1000;
    match seconds {
        0..=119 => format!("{seconds}s ago"),
        120..=7199 => format!("{}m ago", seconds / 60),
        7200..=172_799 => format!("{}h ago", seconds / 3600),
        _ => format!("{}d ago", seconds / 86_400),
    }
}

/// `text` cut to `chars_max` characters (an ellipsis marks the cut), on one line.
fn clip(text: &str, chars_max: usize) -> String {
    let one_line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if one_line.chars().count() <= chars_max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(chars_max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// One row per task (id, state, attempts, last change, last error, payload),
/// then where the next page starts.
fn tasks_table(value: &Value, now_ms: u64) -> Option<String> {
    let tasks = value["tasks"].as_array()?;
    let mut out = String::new();
    if tasks.is_empty() {
        out.push_str("no tasks");
    } else {
        let rows: Vec<Vec<String>> = tasks
            .iter()
            .map(|task| {
                let payload = match (&task["payload"], task["payload_base64"].as_str()) {
                    (Value::Null, Some(base64)) => format!("base64:{base64}"),
                    (payload, _) => payload.to_string(),
                };
                vec![
                    task["id"].as_str().unwrap_or("?").to_string(),
                    task["state"].as_str().unwrap_or("?").to_string(),
                    format!("{}/{}", count(&task["attempts"]), count(&task["max_attempts"])),
                    task["updated_at_ms"].as_u64().map_or_else(|| "-".to_string(), |ms| age(ms, now_ms)),
                    clip(task["error"].as_str().unwrap_or("-"), 40),
                    clip(&payload, 40),
                ]
            })
            .collect();
        out.push_str(&table(&["id", "state", "attempts", "updated", "error", "payload"], &rows));
    }
    if let Some(cursor) = value["next_cursor"].as_str() {
        let _ = write!(out, "\nmore: pass --cursor {cursor}");
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_numbers_right_and_text_left() {
        let rows = vec![vec!["emails".to_string(), "3".to_string()], vec!["a".to_string(), "120".to_string()]];
        assert_eq!(table(&["queue", "ready"], &rows), "QUEUE   READY\nemails      3\na         120");
    }

    #[test]
    fn a_page_of_tasks_is_a_table_with_the_next_cursor() {
        let body = br#"{"tasks":[{"id":"7","state":"dead","payload":{"to":"a"},"attempts":3,"max_attempts":3,"error":"smtp\ntimeout","updated_at_ms":1000}],"next_cursor":"7"}"#;
        let text = render(View::Tasks, body, false);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID  STATE  ATTEMPTS  UPDATED"), "{text}");
        assert!(lines[1].starts_with(" 7  dead   3/3") && lines[1].contains("smtp timeout"), "{text}");
        assert!(lines[1].ends_with(r#"{"to":"a"}"#), "{text}");
        assert_eq!(lines[2], "more: pass --cursor 7");
        assert_eq!(render(View::Tasks, body, true), String::from_utf8_lossy(body));
    }
}
