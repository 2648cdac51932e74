//! The dashboard (`/ui`, docs/dashboard.md) in a real browser against the
//! real server: Debian's `chromium`, headless, driven over the DevTools
//! protocol through `--remote-debugging-pipe` (JSON messages, each ended by
//! a NUL byte, that Chromium reads from its descriptor 3 and writes to its
//! descriptor 4), so no WebSocket client is needed. `tools/test` installs
//! `chromium` (tools/env.sh); without it the browser test fails saying so.
//!
//! The browser test loads the page, waits (polling the page, with a generous
//! deadline) for a queue's number to change as tasks are enqueued over HTTP,
//! browses a queue's dead letters over two pages, retries one and deletes
//! another through the page's buttons and checks both through the API, looks
//! a task up by id, saves a screenshot to `docs/dashboard.png`, and then
//! enters a token on a server started with `--tokens`.

mod support;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use support::Server;

/// How long the page may take to show what a step waits for. Far above what
/// it takes (the page polls once a second): only a failure waits this long.
const PAGE_DEADLINE: Duration = Duration::from_secs(20);
/// How long one DevTools command may take to be answered.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// Between two looks at the page while waiting.
const LOOK_INTERVAL: Duration = Duration::from_millis(100);
/// The screenshot's size, in CSS pixels.
const VIEWPORT: (u32, u32) = (1200, 900);

/// Text a browser would run if the page inserted it as markup.
const HOSTILE_PAYLOAD: &str = "<img src=x onerror=\"window.pwned=1\">";
const HOSTILE_ERROR: &str = "smtp timeout <script>window.pwned=2</script>";

/// Headless Chromium, attached to one page.
struct Browser {
    child: Child,
    /// Our end of Chromium's descriptor 3.
    commands: File,
    /// Messages read from Chromium's descriptor 4, one JSON value each.
    messages: mpsc::Receiver<Value>,
    next_id: u64,
    /// The page's session (flattened into the one pipe).
    session: Option<String>,
    /// Uncaught exceptions and console errors of the page, for diagnostics
    /// and for the final check that there were none.
    problems: Vec<String>,
    profile: tqx_testkit::TempDir,
}

/// A pipe whose both ends are closed on exec (the child gets its end by
/// `dup2` onto 3 or 4, which clears the flag on the copy only).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is an array of two ints, as pipe2 needs.
    let result = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(result, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: pipe2 just opened both descriptors, which nothing else owns.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    /// Starts `chromium --headless` with a fresh profile and opens a blank
    /// page of `VIEWPORT`. Fails, naming the fix, if Chromium is not installed.
    fn start() -> Browser {
        let profile = tqx_testkit::TempDir::create(support::fresh_dir()).expect("profile directory");
        let (chromium_reads, commands) = pipe();
        let (messages_read, chromium_writes) = pipe();
        let (read_fd, write_fd) = (chromium_reads.as_raw_fd(), chromium_writes.as_raw_fd());
        let log = File::create(profile.path().join("chromium.log")).expect("chromium's log file");
        let mut command = Command::new("chromium");
        command
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={},{}", VIEWPORT.0, VIEWPORT.1))
            // Nothing but the page under test: no first-run tabs, no network
            // calls of Chromium's own, no extensions.
            .args(["--no-first-run", "--disable-background-networking", "--disable-extensions", "--disable-sync"])
            .args(["--hide-scrollbars", "--mute-audio", "about:blank"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: between fork and exec the closure calls only fcntl and
        // dup2, which are async-signal-safe, and allocates nothing. The
        // copies above 10 first: either end may itself be 3 or 4.
        unsafe {
            command.pre_exec(move || {
                let read_copy = libc::fcntl(read_fd, libc::F_DUPFD_CLOEXEC, 10);
                let write_copy = libc::fcntl(write_fd, libc::F_DUPFD_CLOEXEC, 10);
                if read_copy < 0 || write_copy < 0 || libc::dup2(read_copy, 3) < 0 || libc::dup2(write_copy, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = match command.spawn() {
            Ok(child) => child,
            Err(error) if error.kind() == ErrorKind::NotFound => panic!(
                "cannot run chromium ({error}): the dashboard's test needs Debian's `chromium` package; \
                 install it with tools/env.sh's ensure_test_deps (`. tools/env.sh && ensure_test_deps`), \
                 which tools/test runs"
            ),
            Err(error) => panic!("cannot start chromium: {error}"),
        };
        drop((chromium_reads, chromium_writes));
        let (sender, messages) = mpsc::channel();
        thread::spawn(move || read_messages(File::from(messages_read), sender));
        let mut browser = Browser {
            child,
            commands: File::from(commands),
            messages,
            next_id: 1,
            session: None,
            problems: Vec::new(),
            profile,
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = browser.call("Target.attachToTarget", json!({"targetId": target["targetId"], "flatten": true}));
        browser.session = Some(attached["sessionId"].as_str().expect("a session id").to_owned());
        browser.call("Runtime.enable", json!({}));
        browser.call("Log.enable", json!({}));
        let (width, height) = VIEWPORT;
        let metrics = json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false});
        browser.call("Emulation.setDeviceMetricsOverride", metrics);
        browser
    }

    /// Sends one command (to the page once attached) and returns its result;
    /// events that arrive meanwhile are kept if they report a problem.
    #[track_caller]
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).expect("a command serializes");
        bytes.push(0);
        if let Err(error) = self.commands.write_all(&bytes) {
            panic!("{method}: writing to chromium: {error}; its log:\n{}", self.log());
        }
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = match self.messages.recv_timeout(left) {
                Ok(message) => message,
                Err(error) => panic!("{method}: no answer from chromium ({error}); its log:\n{}", self.log()),
            };
            if message["id"] == json!(id) {
                if let Some(error) = message.get("error") {
                    panic!("{method}: {error}");
                }
                return message["result"].clone();
            }
            self.note_event(&message);
        }
    }

    /// Keeps an uncaught exception or a console error of the page.
    fn note_event(&mut self, event: &Value) {
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => self.problems.push(format!("exception: {}", event["params"])),
            Some("Log.entryAdded") if event["params"]["entry"]["level"] == "error" => {
                let entry = &event["params"]["entry"];
                self.problems.push(format!("{} error: {}", entry["source"], entry["text"]));
            }
            _ => {}
        }
    }

    /// Opens `url` and waits until its document has loaded (its script ran).
    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        let loaded = format!("location.href === {} && document.readyState === 'complete'", js(url));
        self.wait_until_equal(url, &loaded, json!(true));
    }

    /// The value of a JavaScript expression in the page (promises awaited),
    /// or the exception it threw.
    fn try_eval(&mut self, expression: &str) -> Result<Value, Value> {
        let params = json!({"expression": expression, "returnByValue": true, "awaitPromise": true});
        let mut result = self.call("Runtime.evaluate", params);
        match result.get_mut("exceptionDetails") {
            Some(exception) => Err(exception.take()),
            None => Ok(result["result"]["value"].take()),
        }
    }

    #[track_caller]
    fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression).unwrap_or_else(|exception| panic!("{expression}: {exception}"))
    }

    /// Looks at `expression` until `done` holds for its value; returns that
    /// value. Fails after `PAGE_DEADLINE`, with the last value and the page's
    /// status line.
    #[track_caller]
    fn wait_for(&mut self, what: &str, expression: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PAGE_DEADLINE;
        loop {
            // An exception (a document still loading) is not yet the answer.
            let value = self.try_eval(expression).unwrap_or_else(|exception| json!({"exception": exception}));
            if done(&value) {
                return value;
            }
            if Instant::now() > deadline {
                let status = self.try_eval("document.getElementById('status')?.textContent");
                panic!(
                    "the page did not show {what} within {PAGE_DEADLINE:?}: {expression} is {value}; \
                     page status {status:?}; problems {:?}",
                    self.problems
                );
            }
            thread::sleep(LOOK_INTERVAL);
        }
    }

    /// Waits until `expression` is `expected`.
    #[track_caller]
    fn wait_until_equal(&mut self, what: &str, expression: &str, expected: Value) -> Value {
        self.wait_for(what, expression, |value| *value == expected)
    }

    fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("a screenshot in base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("chromium.log")).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask it to close (it then ends its renderer processes), then make sure.
        let close = b"{\"id\":0,\"method\":\"Browser.close\",\"params\":{}}\0";
        if self.commands.write_all(close).is_ok() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Splits what Chromium writes into messages (each ended by a NUL) until it
/// closes its end.
fn read_messages(mut pipe: File, sender: mpsc::Sender<Value>) {
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let read = match pipe.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        buffer.extend_from_slice(&chunk[..read]);
        while let Some(end) = buffer.iter().position(|&b| b == 0) {
            let message: Vec<u8> = buffer.drain(..=end).collect();
            let Ok(value) = serde_json::from_slice(&message[..end]) else {
                panic!("chromium sent a message that is not JSON: {}", String::from_utf8_lossy(&message));
            };
            if sender.send(value).is_err() {
                return;
            }
        }
    }
}

/// A JavaScript string literal of `text`.
fn js(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// The text of the cell `class` of the dead-letter row of task `id`.
fn dead_cell(id: &str, class: &str) -> String {
    format!("document.querySelector('#dead-tasks tr[data-id={}] td.{class}')?.textContent ?? null", js(id))
}

#[test]
fn the_dashboard_shows_live_counts_retries_and_deletes_dead_letters_looks_tasks_up_and_asks_for_a_token() {
    // Checkpoints every second, so the screenshot shows one.
    let server = Server::start(&["--checkpoint-interval-ms", "1000"]);
    let mut http = server.client();

    // 23 dead letters: a queue whose tasks die at their first failure.
    const DEAD_COUNT: usize = 23;
    http.create_queue("emails", json!({"max_attempts": 1}));
    let tasks: Vec<Value> = (0..DEAD_COUNT)
        .map(|n| json!({"payload": {"to": format!("user{n}@example.org"), "body": HOSTILE_PAYLOAD}}))
        .collect();
    let batch = http.post("/v1/queues/emails/tasks/batch", json!({"tasks": tasks}));
    assert_eq!(batch.status, 201, "{batch:?}");
    let leased = http.dequeue(&["emails"], DEAD_COUNT as u64);
    assert_eq!(leased.len(), DEAD_COUNT);
    let mut dead_ids = Vec::new();
    for task in &leased {
        let id = task["id"].as_str().expect("an id").to_owned();
        let failed =
            http.post(&format!("/v1/tasks/{id}/fail"), json!({"lease": task["lease"], "error": HOSTILE_ERROR}));
        assert_eq!(failed.body["state"], json!("dead"), "{failed:?}");
        dead_ids.push(id);
    }
    // Live traffic elsewhere: two ready, one completed, one delayed.
    let order = http.enqueue("orders", json!({"payload": {"order": 1, "sku": "A-17"}}));
    for n in 2..4 {
        http.enqueue("orders", json!({"payload": {"order": n}}));
    }
    let first = http.dequeue(&["orders"], 1);
    let lease = first[0]["lease"].clone();
    let done = http.post(&format!("/v1/tasks/{}/complete", first[0]["id"].as_str().unwrap()), json!({"lease": lease}));
    assert_eq!(done.status, 200, "{done:?}");
    http.enqueue("reports", json!({"payload": "nightly", "delay_ms": 3_600_000}));

    let mut browser = Browser::start();
    browser.navigate(&format!("http://{}/ui", server.addr));

    // A live number: the ready count of `orders` follows enqueues made now.
    let ready = "document.querySelector('#queues tr[data-queue=\"orders\"] td.ready')?.textContent ?? null";
    browser.wait_until_equal("2 ready in orders", ready, json!("2"));
    for n in 4..9 {
        http.enqueue("orders", json!({"payload": {"order": n}}));
    }
    browser.wait_until_equal("7 ready in orders after 5 more enqueues", ready, json!("7"));
    let dead = "document.querySelector('#queues tr[data-queue=\"emails\"] td.dead')?.textContent ?? null";
    assert_eq!(browser.eval(dead), json!("23"));

    // The dead-letter browser, page by page.
    browser.wait_for(
        "emails among the dead-letter queues",
        "[...document.querySelectorAll('#dead-queue option')].map(o => o.value)",
        |values| values.as_array().is_some_and(|v| v.contains(&json!("emails"))),
    );
    browser.eval(
        "(() => { const s = document.getElementById('dead-queue'); s.value = 'emails'; \
         s.dispatchEvent(new Event('change')); })()",
    );
    let rows = "document.querySelectorAll('#dead-tasks tr').length";
    browser.wait_until_equal("a first page of 20 dead letters", rows, json!(20));
    assert_eq!(browser.eval("document.getElementById('dead-more').hidden"), json!(false), "a next page");
    browser.eval("document.getElementById('dead-more').click()");
    browser.wait_until_equal("all 23 dead letters after More", rows, json!(DEAD_COUNT));
    browser.wait_until_equal(
        "no More once the cursor is exhausted",
        "document.getElementById('dead-more').hidden",
        json!(true),
    );

    // What the table shows of a dead task, as text: markup stays text.
    let (retried, deleted) = (&dead_ids[0], &dead_ids[1]);
    assert_eq!(browser.eval(&dead_cell(retried, "attempts")), json!("1 of 1"));
    assert_eq!(browser.eval(&dead_cell(retried, "error")), json!(HOSTILE_ERROR));
    let payload = browser.eval(&dead_cell(retried, "payload"));
    let expected_payload = json!({"to": "user0@example.org", "body": HOSTILE_PAYLOAD}).to_string();
    assert_eq!(payload, json!(expected_payload), "the payload, as JSON text");
    let injected = "document.querySelectorAll('#dead-tasks img, #dead-tasks script').length + (window.pwned ?? 0)";
    assert_eq!(browser.eval(injected), json!(0), "no element or script came from a payload or an error");

    // Retry one, delete another, through their buttons.
    let click = |id: &str, button: &str| {
        format!("document.querySelector('#dead-tasks tr[data-id={}] button.{button}').click()", js(id))
    };
    browser.eval(&click(retried, "retry"));
    browser.wait_until_equal("the retry's outcome", &dead_cell(retried, "actions"), json!("retried: ready"));
    let task = http.task(retried);
    assert_eq!((task["state"].clone(), task["attempts"].clone()), (json!("ready"), json!(0)), "{task}");
    browser.eval(&click(deleted, "delete"));
    browser.wait_until_equal("the delete's outcome", &dead_cell(deleted, "actions"), json!("deleted"));
    http.get(&format!("/v1/tasks/{deleted}")).assert_error(404, "task_not_found");

    // Look a task up by id: the page shows what GET /v1/tasks/{id} answers.
    browser.eval(&format!(
        "document.getElementById('lookup-id').value = {}; document.getElementById('lookup-form').requestSubmit()",
        js(&order)
    ));
    let shown =
        browser.wait_for("the task looked up", "document.getElementById('lookup-result').textContent", |text| {
            text.as_str().is_some_and(|text| !text.is_empty())
        });
    let shown: Value = serde_json::from_str(shown.as_str().unwrap()).expect("the lookup shows JSON");
    assert_eq!(shown, http.task(&order), "the page shows the task as the API does");

    // Rates need two polls, and a plot a few; then the screenshot (docs/dashboard.png).
    browser.wait_for("a rate", "document.getElementById('rate-enqueued').textContent", |text| *text != json!("–"));
    browser.wait_for(
        "latency plots of a few points",
        "Math.min(...[...document.querySelectorAll('#latency figure')].map(f => Number(f.dataset.points)))",
        |points| points.as_f64().is_some_and(|points| points >= 5.0),
    );
    // Rates: tasks enqueued now show as a rate at the next poll.
    for n in 9..15 {
        http.enqueue("orders", json!({"payload": {"order": n}}));
    }
    browser.wait_for("a rate of enqueues", "document.getElementById('rate-enqueued').textContent", |text| {
        text.as_str().and_then(|text| text.parse::<f64>().ok()).is_some_and(|rate| rate > 0.0)
    });
    browser.screenshot(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/dashboard.png")));
    assert_eq!(browser.problems, Vec::<String>::new(), "the page ran without an exception or a console error");

    // With --tokens: the page asks for a token and sends it as a bearer.
    let dir = tqx_testkit::TempDir::create(support::fresh_dir()).expect("a directory");
    let tokens = dir.path().join("tokens");
    let token = support::create_token(&tokens, &["--scope", "admin"]);
    let secured = Server::start(&["--tokens", tokens.to_str().unwrap()]);
    browser.problems.clear();
    browser.navigate(&format!("http://{}/ui", secured.addr));
    browser.wait_until_equal("the token form", "document.getElementById('auth').hidden", json!(false));
    browser.eval(&format!(
        "document.getElementById('token').value = {}; document.getElementById('token-form').requestSubmit()",
        js(&token)
    ));
    browser.wait_until_equal(
        "live statistics with the token",
        "document.getElementById('status').textContent",
        json!("live"),
    );
    assert_eq!(browser.eval("sessionStorage.getItem('tqx-token')"), json!(token));
    assert_eq!(browser.eval("document.getElementById('auth').hidden"), json!(true));
}

/// The files go through the real reactor: no token needed even under
/// `--tokens` (the API still wants one), and they are counted under `ui`.
#[test]
fn the_dashboard_files_need_no_token_and_are_counted_under_ui() {
    let dir = tqx_testkit::TempDir::create(support::fresh_dir()).expect("a directory");
    let tokens = dir.path().join("tokens");
    let token = support::create_token(&tokens, &["--scope", "admin"]);
    let server = Server::start(&["--tokens", tokens.to_str().unwrap()]);
    let mut http = server.client();
    for path in ["/ui", "/ui/", "/ui/app.js", "/ui/style.css", "/ui/icon.png"] {
        let response = http.get(path);
        assert_eq!(response.status, 200, "{path}: {response:?}");
        assert!(response.header("content-security-policy").is_some_and(|csp| csp.starts_with("default-src 'none'")));
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"), "{path}");
    }
    assert_eq!(http.get("/ui/nope").status, 404);
    http.get("/v1/stats").assert_error(401, "unauthenticated");

    http.send_raw(format!("GET /v1/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes());
    let stats = http.read_response().expect("the statistics");
    assert_eq!(stats.status, 200, "{stats:?}");
    let count = |outcome: &str| {
        stats.body["requests"]
            .as_array()
            .expect("requests")
            .iter()
            .find(|entry| entry["protocol"] == "http" && entry["op"] == "ui" && entry["outcome"] == outcome)
            .map(|entry| entry["count"].clone())
    };
    assert_eq!(count("ok"), Some(json!(5)), "{stats:?}");
    assert_eq!(count("not_found"), Some(json!(1)), "{stats:?}");
}
