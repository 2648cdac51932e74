//! Replay: the log's records, decoded with the one command decoder
//! (`wal::record`) and executed with the same `command::execute` the
//! executor runs, rebuild the engine the server had. The server's recovery
//! (`server/durability.rs`) and the simulator's restarts both call this.

use crate::command::execute;
use crate::engine::{Engine, EngineConfig};
use crate::wal::record::{self, Entry, LogRecord};

/// A record replay cannot apply: the log is not a history this server wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayError {
    pub lsn: u64,
    pub reason: String,
}

/// Replays `records` (LSN and bytes, in LSN order) on top of `engine` (a
/// checkpoint's, or `None` for a log that starts with the seed record).
/// `progress` is called after each record with how many were replayed.
/// Returns the engine (`None` if the log held no record at all) and the
/// latest `now_ms` the records carry: the executor's clock starts there, so
/// replay saw the same times the engine saw.
pub fn replay(
    config: &EngineConfig,
    mut engine: Option<Engine>,
    records: impl IntoIterator<Item = (u64, Vec<u8>)>,
    mut progress: impl FnMut(usize),
) -> Result<(Option<Engine>, u64), ReplayError> {
    let mut clock_ms = 0;
    for (i, (lsn, bytes)) in records.into_iter().enumerate() {
        let replay_error = |reason: String| ReplayError { lsn, reason };
        let LogRecord { now_ms, entry } = record::decode(&bytes).map_err(|e| replay_error(e.0))?;
        clock_ms = clock_ms.max(now_ms);
        match (entry, engine.as_mut()) {
            (Entry::Seed(seed), None) => engine = Some(Engine::new(EngineConfig { seed, ..config.clone() })),
            (Entry::Command(command), Some(engine)) => {
                execute(engine, command, now_ms);
            }
            (Entry::Tick { work_max }, Some(engine)) => {
                engine.tick(now_ms, work_max as usize);
            }
            (Entry::Seed(_), Some(_)) => return Err(replay_error("a second seed record".into())),
            (_, None) => return Err(replay_error("the log does not begin with the engine's seed".into())),
        }
        progress(i + 1);
    }
    Ok((engine, clock_ms))
}
