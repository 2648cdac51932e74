//! `tqx`, the TaskQueueX binary: installs the allocator and the panic hook,
//! then runs the command line, which lives in the library
//! ([`taskqueuex::cli`], `src/cli/`): `tqx serve` and its flags, the client
//! subcommands and `tqx demo`. Logging is set up by `tqx serve` from its
//! `--log-format` and `--log-level` flags.

use std::process::ExitCode;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before the first allocation (its `malloc_conf`;
/// `tikv-jemalloc-sys` prefixes the symbol). `_RJEM_MALLOC_CONF` in the
/// environment overrides them.
///
/// `background_thread:true`, as Redis does (`jemalloc-bg-thread yes`): without
/// it jemalloc returns freed pages to the OS only while the program allocates,
/// so a server that has just absorbed a burst (a growing task slab leaves its
/// old buffers behind, a checkpoint frees its copy) and then sits idle keeps
/// them resident indefinitely. Measured: 1M queued tasks, `memory` mode, 15 s
/// after the preload: 142 -> 109 bytes per task beyond the payload
/// (docs/benchmarks/changelog.md).
#[used]
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &[u8; 23] = b"background_thread:true\0";

fn main() -> ExitCode {
    install_panic_hook();
    taskqueuex::cli::main()
}

/// Makes a panic loud before the process ends. The release profile has
/// `panic = "abort"` (Cargo.toml): a bug on any thread ends the whole process,
/// so a supervisor restarts it and recovery replays the log, instead of a server
/// that accepts connections and answers nothing (issue 15, item 2). The hook runs
/// before the abort: it logs the panic through `tracing` (JSON logs included) with
/// the thread's name, then the default hook prints the message and location. It
/// also aborts itself, so the guarantee holds in a build without the profile.
fn install_panic_hook() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        tracing::error!(thread, panic = %info, "a bug: the process stops now; restart it and recovery replays the log");
        default_hook(info);
        std::process::abort();
    }));
}
