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
    let output = Command::new(env!("CARGO_BIN_EXE_tqx"))
        .args(["serve", "--no-pin", "--http", &address, "--binary", "127.0.0.1:0", "--data"])
        .arg(&data)
        .output()
        .expect("run tqx serve");
    let _ = std::fs::remove_dir_all(&data);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("cannot listen on") && stderr.contains("in use"), "stderr: {stderr}");
}
