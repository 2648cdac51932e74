//! How `tqx serve` starts and refuses to: the io_uring check and the bind check.

use std::net::TcpListener;
use std::process::{Command, Stdio};

/// `io_uring_setup` blocked the way a container's default seccomp profile blocks
/// it: the server must exit 1 saying io_uring is unavailable and how to allow it.
#[cfg(target_arch = "x86_64")]
#[test]
fn serve_explains_how_to_allow_io_uring_when_seccomp_blocks_it() {
    use std::os::unix::process::CommandExt;

    let data = std::env::temp_dir().join(format!("tqx-serve-seccomp-{}", std::process::id()));
    let mut command = Command::new(env!("CARGO_BIN_EXE_tqx"));
    command.args(["serve", "--http", "127.0.0.1:0", "--binary", "127.0.0.1:0", "--no-pin", "--data"]).arg(&data);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: runs in the child between fork and exec; only async-signal-safe calls.
    unsafe {
        command.pre_exec(|| {
            deny_io_uring_setup();
            Ok(())
        });
    }
    let output = command.output().expect("run tqx serve");
    let _ = std::fs::remove_dir_all(&data);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("io_uring is not available"), "stderr: {stderr}");
    assert!(stderr.contains("seccomp") && stderr.contains("io_uring_disabled"), "no advice in: {stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("listening"));
}

/// Installs a seccomp filter that makes `io_uring_setup` fail with EPERM.
#[cfg(target_arch = "x86_64")]
fn deny_io_uring_setup() {
    const SYS_IO_URING_SETUP: u32 = 425;
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    let filter = [
        // Load the architecture; allow everything if it is not x86_64.
        libc::sock_filter { code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, jt: 0, jf: 0, k: 4 },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 3,
            k: AUDIT_ARCH_X86_64,
        },
        // Load the system call number.
        libc::sock_filter { code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, jt: 0, jf: 0, k: 0 },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: SYS_IO_URING_SETUP,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: libc::SECCOMP_RET_ALLOW },
    ];
    let program = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut libc::sock_filter };
    // SAFETY: prctl with a valid, live filter program.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &program as *const libc::sock_fprog);
    }
}

#[test]
fn serve_refuses_an_address_another_process_listens_on() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let data = std::env::temp_dir().join(format!("tqx-serve-bind-{}", std::process::id()));
    let (status, _, stderr) =
        support::serve_until_exit(&["--no-pin", "--http", &address, "--binary", "127.0.0.1:0"], &data);
    let _ = std::fs::remove_dir_all(&data);
    assert_eq!(status.and_then(|s| s.code()), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("cannot listen on") && stderr.contains("in use"), "stderr: {stderr}");
}

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Starts `tqx serve` on fixed addresses and waits for its `listening`
/// lines; on failure returns what it printed on stderr.
fn start_on(http: &str, binary: &str, data: &Path) -> Result<tqx_testkit::Tqx, String> {
    tqx_testkit::Launch::new(env!("CARGO_BIN_EXE_tqx"), data, data.with_extension("stderr"))
        .http(http)
        .binary(binary)
        .args(["--no-pin", "--reactors", "1", "--workers", "1"])
        .start(Duration::from_secs(10))
        .map_err(|failure| format!("{failure}\n{}", failure.log_since_start()))
}

/// A restart right after `kill -9` failed about half the time with "Address
/// already in use": the dead server's io_uring instance still held its
/// listening sockets for some milliseconds.
#[test]
fn restarting_on_the_same_port_right_after_kill_9_succeeds() {
    let free = || TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let (http, binary) = (free(), free());
    let data = support::fresh_dir();
    for attempt in 0..8 {
        let server = start_on(&http, &binary, &data)
            .unwrap_or_else(|stderr| panic!("restart {attempt} on {http} failed:\n{stderr}"));
        // A connection, as a client reconnecting at once would make.
        let _ = std::net::TcpStream::connect(&http);
        server.kill().unwrap();
    }
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_file(data.with_extension("stderr"));
}

/// Every file under `dir` with its length and modification time.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let metadata = entry.metadata().unwrap();
        if metadata.is_dir() {
            files.extend(snapshot(&entry.path()));
        } else {
            files.push((entry.path(), metadata.len(), metadata.modified().unwrap()));
        }
    }
    files.sort();
    files
}

/// A second server on a data directory in use printed `listening`, then died
/// with RocksDB's raw LOCK error, having renamed RocksDB's LOG on its way.
#[test]
fn a_second_server_on_a_data_directory_in_use_stops_before_listening_naming_the_pid_and_touches_nothing() {
    // No checkpoint round between the two snapshots below.
    let first = support::Server::start(&["--checkpoint-interval-ms", "86400000"]);
    first.client().enqueue("q", serde_json::json!({"payload": 1}));
    let data = first.data_dir();
    let before = snapshot(&data);
    let started = Instant::now();
    let (status, stdout, stderr) =
        support::serve_until_exit(&["--no-pin", "--http", "127.0.0.1:0", "--binary", "127.0.0.1:0"], &data);
    assert_eq!(status.and_then(|s| s.code()), Some(1), "stderr: {stderr}");
    assert!(!stdout.contains("listening"), "it listened first");
    let pid: u32 = std::fs::read_to_string(data.join("tqx.lock")).unwrap().trim().parse().unwrap();
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(cmdline.contains(data.to_str().unwrap()), "the lock names the first server, pid {pid}: {cmdline:?}");
    assert!(stderr.contains("is in use") && stderr.contains(&format!("pid {pid}")), "stderr: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(5), "it waited for something");
    assert_eq!(snapshot(&data), before, "the second server changed the first one's files");
    first.assert_healthy();
}

/// Task data is readable by the server's user only, whatever the umask it
/// was started with.
#[test]
fn the_data_directory_is_0700_and_every_file_in_it_0600() {
    let mut server = support::Server::start(&[]);
    let mut client = server.client();
    for i in 0..10 {
        client.enqueue("q", serde_json::json!({"payload": i}));
    }
    // A clean stop checkpoints: RocksDB's SST, MANIFEST and OPTIONS files exist.
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()));
    fn check(dir: &Path, files: &mut usize) {
        let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                check(&path, files);
            } else {
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", path.display());
                *files += 1;
            }
        }
    }
    let mut files = 0;
    check(&server.data_dir(), &mut files);
    assert!(files >= 8, "WAL, manifest, lock and RocksDB's files: {files}");
    let sst = std::fs::read_dir(server.data_dir().join("store"))
        .unwrap()
        .any(|e| e.unwrap().path().extension().is_some_and(|x| x == "sst"));
    assert!(sst, "a checkpoint was flushed to an SST file");
}

/// The CPUs the calling thread may run on.
fn thread_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set), 0);
        (0..libc::CPU_SETSIZE as usize).filter(|&cpu| libc::CPU_ISSET(cpu, &set)).collect()
    }
}

/// Confines the calling thread (and what it spawns from now on) to `cpus`.
fn confine_thread(cpus: &[usize]) {
    // SAFETY: as above; CPU_SET writes within the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0);
    }
}

/// `Cpus_allowed_list` of the server's thread named `name`, once it exists.
fn thread_cpus_of(pid: u32, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() == name {
                let status = std::fs::read_to_string(task.path().join("status")).unwrap();
                let line = status.lines().find(|l| l.starts_with("Cpus_allowed_list:")).unwrap();
                return line.split_whitespace().nth(1).unwrap().to_string();
            }
        }
        assert!(Instant::now() < deadline, "no thread {name} in server {pid}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pinning put threads on cores 0, 1, … whatever the process's affinity
/// allowed: a server confined by `taskset -c 1` ran its reactor on CPU 0, and
/// two servers on one machine always shared the same cores. Threads are now
/// pinned within the affinity the server starts with, or to `--cpus`.
#[test]
fn threads_are_pinned_within_the_affinity_the_server_starts_with_or_to_cpus() {
    let allowed = thread_cpus();
    let last = *allowed.last().unwrap();
    // As `taskset -c LAST tqx serve --pin`: the child inherits this mask.
    confine_thread(&[last]);
    let server = support::Server::launch(support::fresh_dir(), &["--pin"]);
    confine_thread(&allowed);
    server.wait_healthy();
    for thread in ["tqx-reactor-0", "tqx-worker-0"] {
        assert_eq!(thread_cpus_of(server.pid(), thread), last.to_string(), "{thread} under taskset -c {last}");
    }
    drop(server);

    let first = allowed[0];
    let server = support::Server::start(&["--cpus", &first.to_string()]);
    for thread in ["tqx-reactor-0", "tqx-worker-0"] {
        assert_eq!(thread_cpus_of(server.pid(), thread), first.to_string(), "{thread} with --cpus {first}");
    }
    drop(server);

    // A CPU the process may not run on is refused at start, naming the allowed ones.
    let data = support::fresh_dir();
    let outside = (allowed.last().unwrap() + 1).to_string();
    let (status, _, stderr) =
        support::serve_until_exit(&["--cpus", &outside, "--http", "127.0.0.1:0", "--binary", "127.0.0.1:0"], &data);
    let _ = std::fs::remove_dir_all(&data);
    assert_eq!(status.and_then(|s| s.code()), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("--cpus names CPUs") && stderr.contains(&format!("{allowed:?}")), "stderr: {stderr}");
}

// ---- configuration: flags > TQX_* environment > --config file > defaults ----------

/// `tqx serve --print-config` with `env` set: each setting's `(value, source)`.
fn print_config(args: &[&str], env: &[(&str, &str)]) -> std::collections::HashMap<String, (String, String)> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tqx"));
    command.args(["serve", "--print-config"]).args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("run tqx serve --print-config");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let (setting, source) = line.split_once(" # ").expect("each setting names its source");
            let (key, value) = setting.split_once(" = ").expect("key = value");
            (key.trim().to_owned(), (value.trim().trim_matches('"').to_owned(), source.trim().to_owned()))
        })
        .collect()
}

#[test]
fn configuration_precedence_is_flag_then_environment_then_file_then_default() {
    let dir = support::fresh_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tqx.toml");
    std::fs::write(
        &file,
        "durability = \"memory\"\nreactors = 1\nmax-connections = 1000\npin = true\nlog_level = \"debug\"\n",
    )
    .unwrap();
    let file_arg = file.to_str().unwrap();
    let settings = print_config(
        &["--config", file_arg, "--durability", "sync"],
        &[("TQX_REACTORS", "2"), ("TQX_DURABILITY", "interval:5"), ("TQX_IDLE_TIMEOUT_MS", "1234")],
    );
    let setting = |key: &str| settings.get(key).cloned().unwrap_or_else(|| panic!("{key} missing: {settings:?}"));
    let from_file = format!("file {file_arg}");
    assert_eq!(setting("durability"), ("sync".into(), "flag --durability".into()), "a flag beats all");
    assert_eq!(setting("reactors"), ("2".into(), "environment TQX_REACTORS".into()), "the environment beats the file");
    assert_eq!(setting("idle_timeout_ms"), ("1234".into(), "environment TQX_IDLE_TIMEOUT_MS".into()));
    assert_eq!(setting("max_connections"), ("1000".into(), from_file.clone()), "kebab-case keys too");
    assert_eq!(setting("pin"), ("true".into(), from_file.clone()));
    assert_eq!(setting("log_level"), ("debug".into(), from_file));
    assert_eq!(setting("queue_capacity"), ("65536".into(), "default".into()));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The file's settings reach the server it starts: a 100-byte body limit
/// from the file refuses a larger request with 413.
#[test]
fn a_config_file_configures_the_server_it_starts() {
    let dir = support::fresh_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tqx.toml");
    std::fs::write(&file, "max_body_bytes = 100\ndurability = \"memory\"\n").unwrap();
    let server = support::Server::start(&["--config", file.to_str().unwrap()]);
    let mut client = server.client();
    let small = serde_json::json!({"payload": "x"});
    assert_eq!(client.request("POST", "/v1/queues/q/tasks", Some(&small)).status, 201);
    let large = serde_json::json!({"payload": "x".repeat(200)});
    client.request("POST", "/v1/queues/q/tasks", Some(&large)).assert_error(413, "payload_too_large");
}

#[test]
fn a_config_file_with_an_unknown_key_or_a_refused_value_stops_the_start_naming_both() {
    let dir = support::fresh_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tqx.toml");
    for (text, words) in [
        ("max_conections = 10\n", &["unknown key `max_conections`"][..]),
        ("max_connections = 0\n", &["--max-connections", "0 is not in"][..]),
        ("pin = \"yes\"\n", &["`pin` must be true or false"][..]),
        ("durability = \n", &["not valid TOML"][..]),
    ] {
        std::fs::write(&file, text).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_tqx"))
            .args(["serve", "--http", "127.0.0.1:0", "--binary", "127.0.0.1:0", "--config"])
            .arg(&file)
            .arg("--data")
            .arg(dir.join("data"))
            .output()
            .expect("run tqx serve");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(file.to_str().unwrap()), "{text}: the message names the file: {stderr}");
        for word in words {
            assert!(stderr.contains(word), "{text}: {word:?} not in {stderr}");
        }
        assert!(!String::from_utf8_lossy(&output.stdout).contains("listening"), "{text}: it must not start");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// One startup line says what runs: the version, the data directory as an
/// absolute path (the flag gave a relative one), the durability mode, the
/// listeners and the cores.
#[test]
fn the_startup_line_names_the_version_the_absolute_data_directory_and_the_listeners() {
    let dir = support::fresh_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tqx"))
        .current_dir(&dir)
        .args(["serve", "--http", "127.0.0.1:0", "--binary", "127.0.0.1:0", "--data", "relative-data", "--no-pin"])
        .args(["--durability", "memory", "--reactors", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tqx serve");
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !line.contains("listening") {
        line.clear();
        assert!(Instant::now() < deadline, "no startup line");
        assert!(
            std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0,
            "stderr ended before the startup line"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    let absolute = std::fs::canonicalize(dir.join("relative-data")).unwrap();
    for field in [
        format!("version={}", env!("CARGO_PKG_VERSION")),
        format!("data={}", absolute.display()),
        "durability=memory".to_string(),
        "http=127.0.0.1:".to_string(),
        "binary=127.0.0.1:".to_string(),
        "reactors=1".to_string(),
    ] {
        assert!(line.contains(&field), "{field:?} not in the startup line: {line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- the activity log (docs/logs.md) ---------------------------------------------

/// Polls the server's stderr (for up to 30 s: a loaded machine delays the
/// server, never the assertion) until `found` finds something in it.
#[track_caller]
fn wait_for_log<T>(server: &support::Server, what: &str, found: impl Fn(&str) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = found(&server.stderr()) {
            return value;
        }
        assert!(Instant::now() < deadline, "no {what} in the log:\n{}", server.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The number after `name=` in a text log line.
fn field(line: &str, name: &str) -> Option<u64> {
    line.split_whitespace().find_map(|word| word.strip_prefix(&format!("{name}="))?.parse().ok())
}

/// Recovery that takes longer than its interval says where it is, once per
/// interval, and its end says what it replayed. The log writer's first sync
/// (a new log's seed record) is held by the gate, so recovery lasts as long
/// as the test wants; the restart after a crash replays what was written.
#[test]
fn recovery_reports_its_phase_while_it_lasts_and_a_restart_what_it_replayed() {
    let dir = support::fresh_dir();
    let mut gate = support::SyncGate::new(&dir);
    let gate_arg = gate.arg();
    let no_checkpoint = ["--checkpoint-interval-ms", "3600000"];
    let args = [&["--debug-wal-sync-gate", &gate_arg, "--debug-activity-log-interval-ms", "100"][..], &no_checkpoint];
    let server = support::Server::launch(dir, &args.concat());
    // Held in its last phase (earlier ones may have lasted a line too).
    let line = wait_for_log(&server, "recovery progress", |log| {
        log.lines().find(|line| line.contains(" recovering ") && line.contains("phase=\"finishing\"")).map(String::from)
    });
    assert!(line.contains("INFO"), "{line}");
    assert!(field(&line, "elapsed_ms").is_some_and(|ms| ms >= 100), "{line}");
    assert!(!server.stderr().contains("recovered"), "recovery is held by the gate:\n{}", server.stderr());
    gate.release(1_000); // the seed, then every batch below
    server.wait_healthy();
    let mut client = server.client();
    for i in 0..3 {
        client.enqueue("logs", serde_json::json!({"payload": i}));
    }

    // kill -9, then a restart with JSON logs: the log holds the seed, the
    // queue's creation and three enqueues, and no checkpoint was taken.
    let server = server.crash_and_restart(&[&["--log-format", "json"][..], &no_checkpoint].concat());
    let recovered = wait_for_log(&server, "recovered line", |log| {
        log.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|line| line["fields"]["message"] == "recovered")
    });
    let fields = &recovered["fields"];
    assert_eq!(recovered["level"], "INFO", "{recovered}");
    assert_eq!((fields["checkpoint_lsn"].as_u64(), fields["tasks"].as_u64()), (Some(0), Some(3)), "{recovered}");
    assert!(fields["records"].as_u64().is_some_and(|records| records >= 4), "{recovered}");
    assert!(fields["elapsed_ms"].is_u64() && fields["bytes"].is_u64(), "{recovered}");
}

/// With `--log-format json` every line is one JSON object, and the
/// checkpoint line carries its numbers as numbers: rounds, rows (3 tasks and
/// their queue at least, over however many lines), the LSNs covered.
#[test]
fn json_logs_are_one_object_a_line_and_checkpoints_are_aggregated_with_their_rows_and_lsns() {
    let server = support::Server::start(&[
        "--log-format",
        "json",
        "--checkpoint-interval-ms",
        "50",
        "--debug-activity-log-interval-ms",
        "300",
    ]);
    let mut client = server.client();
    for i in 0..3 {
        client.enqueue("logs", serde_json::json!({"payload": i}));
    }
    let lines = wait_for_log(&server, "checkpoint lines with 4 rows", |log| {
        let checkpoints: Vec<serde_json::Value> = log
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["fields"]["message"] == "checkpoints")
            .collect();
        let rows: u64 = checkpoints.iter().filter_map(|line| line["fields"]["rows"].as_u64()).sum();
        (rows >= 4).then_some(checkpoints)
    });
    for line in &lines {
        let fields = &line["fields"];
        assert_eq!(line["level"], "INFO", "{line}");
        assert!(fields["count"].as_u64().is_some_and(|count| count >= 1), "{line}");
        assert!(fields["window_ms"].as_u64().is_some_and(|ms| ms >= 300), "one line per 300 ms at most: {line}");
        assert!(fields["slowest_ms"].is_u64() && fields["flushed_lsn"].is_u64(), "{line}");
        assert!(fields["applied_lsn"].as_u64().is_some_and(|lsn| lsn >= 1), "{line}");
    }
    for line in server.stderr().lines() {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        assert!(parsed["level"].is_string() && parsed["fields"]["message"].is_string(), "{line}");
    }
}

/// A log batch whose sync takes longer than 100 ms (the gate holds it for
/// a second) is reported as a warning with the slowest sync.
#[test]
fn a_slow_wal_sync_is_a_warning_naming_the_slowest() {
    let dir = support::fresh_dir();
    let mut gate = support::SyncGate::new(&dir);
    gate.release(1); // the new log's seed record
    let gate_arg = gate.arg();
    let server =
        support::Server::launch(dir, &["--debug-wal-sync-gate", &gate_arg, "--debug-activity-log-interval-ms", "200"]);
    server.wait_healthy();
    let enqueue = {
        let mut client = server.client();
        std::thread::spawn(move || client.enqueue("slow", serde_json::json!({"payload": 1})))
    };
    // Not an assertion: the time the sync is held, which makes it slow.
    std::thread::sleep(Duration::from_secs(1));
    gate.release(1);
    enqueue.join().expect("the enqueue is answered once its sync is done");
    let line = wait_for_log(&server, "slow sync warning", |log| {
        log.lines().find(|line| line.contains("slow WAL syncs")).map(String::from)
    });
    assert!(line.contains("WARN"), "{line}");
    assert!(field(&line, "count").is_some_and(|count| count >= 1), "{line}");
    assert!(field(&line, "slowest_ms").is_some_and(|ms| ms >= 100), "{line}");
    assert_eq!(field(&line, "threshold_ms"), Some(100), "{line}");
}

/// A request the server refuses for its own capacity (here a second long
/// poll past `--connection-long-polls-max 1`) is counted into one warning
/// naming the error's code, how many and an example operation.
#[test]
fn requests_answered_with_a_server_error_are_one_warning_naming_the_code_and_an_example() {
    let server =
        support::Server::start(&["--connection-long-polls-max", "1", "--debug-activity-log-interval-ms", "200"]);
    let mut client = server.client();
    client.create_queue("waits", serde_json::json!({}));
    let dequeue = support::request_bytes("POST", "/v1/dequeue", Some(br#"{"queues":["waits"],"max":1,"wait_ms":500}"#));
    client.send_raw(&[dequeue.clone(), dequeue].concat());
    let held = client.read_response().expect("the first long poll ends empty");
    assert_eq!(held.status, 200, "{held:?}");
    client.read_response().expect("the second is refused").assert_error(503, "capacity_exceeded");
    let line = wait_for_log(&server, "server error warning", |log| {
        log.lines().find(|line| line.contains("server errors")).map(String::from)
    });
    assert!(line.contains("WARN") && line.contains("code=\"capacity_exceeded\""), "{line}");
    assert_eq!(field(&line, "count"), Some(1), "{line}");
    assert!(line.contains("example=\"http dequeue\""), "{line}");
}
