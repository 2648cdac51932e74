//! A blocking client with the same calls as [`crate::Client`], for programs
//! without an async runtime (the `tqx` command line, scripts, simple workers).
//!
//! It owns a private current-thread tokio runtime, driven by one background
//! thread for the client's life: the connection's reader and writer tasks run
//! there all the time, so a dropped connection is noticed while the caller is
//! idle (and the next call reconnects instead of writing into a dead socket).
//! Each call blocks the calling thread on `Handle::block_on`.
//!
//! Do not call it from inside an async runtime: blocking a runtime's thread
//! panics in tokio (and would stall that runtime). Use the async client there.

use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tqx_wire::{
    CompleteItem, CompleteOutcome, Enqueued, LeasedTask, QueueInfo, QueuePatch, TaskSpec, TaskState, TaskView,
};

use crate::error::ClientError;
use crate::options::ClientOptions;

/// The blocking client. See [`crate::Client`] for what each call does and
/// which calls are resent after a dropped connection; the semantics are the
/// same. Not `Clone`; share it behind an `Arc` (calls take `&self` and may run
/// from several threads at once, pipelined on the one connection).
pub struct Client {
    // Declared before `runtime` so it drops first, while the runtime still runs:
    // that closes the connection's tasks and socket in an orderly way.
    inner: crate::Client,
    runtime: Runtime,
}

/// The runtime and the thread that drives it.
struct Runtime {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    driver: Option<JoinHandle<()>>,
}

impl Runtime {
    fn start(addr: &str) -> Result<Runtime, ClientError> {
        let failed = |reason: String| ClientError::Connect { addr: addr.to_string(), attempts: 0, reason };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| failed(format!("cannot start the client's runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let driver = std::thread::Builder::new()
            .name("tqx-client".to_string())
            .spawn(move || {
                // Drives I/O and timers for every task and every `Handle::block_on`
                // until the client is dropped (`stop` sent or dropped).
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(|e| failed(format!("cannot start the client's thread: {e}")))?;
        Ok(Runtime { handle, stop: Some(stop), driver: Some(driver) })
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(driver) = self.driver.take() {
            let _ = driver.join();
        }
    }
}

impl Client {
    /// As [`crate::Client::connect`].
    pub fn connect(addr: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let runtime = Runtime::start(addr)?;
        let inner = runtime.handle.block_on(crate::Client::connect(addr, options))?;
        Ok(Client { inner, runtime })
    }

    fn block_on<T>(&self, call: impl std::future::Future<Output = T>) -> T {
        self.runtime.handle.block_on(call)
    }

    /// The async client this one wraps.
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }

    pub fn ping(&self) -> Result<bool, ClientError> {
        self.block_on(self.inner.ping())
    }

    /// See [`crate::Client::stats`].
    pub fn stats(&self) -> Result<bytes::Bytes, ClientError> {
        self.block_on(self.inner.stats())
    }

    pub fn configure_queue(&self, queue: &str, patch: &QueuePatch) -> Result<QueueInfo, ClientError> {
        self.block_on(self.inner.configure_queue(queue, patch))
    }

    pub fn list_queues(&self) -> Result<Vec<QueueInfo>, ClientError> {
        self.block_on(self.inner.list_queues())
    }

    pub fn get_queue(&self, queue: &str) -> Result<QueueInfo, ClientError> {
        self.block_on(self.inner.get_queue(queue))
    }

    pub fn delete_queue(&self, queue: &str, force: bool) -> Result<(), ClientError> {
        self.block_on(self.inner.delete_queue(queue, force))
    }

    pub fn enqueue(&self, queue: &str, task: TaskSpec) -> Result<Enqueued, ClientError> {
        self.block_on(self.inner.enqueue(queue, task))
    }

    pub fn enqueue_batch(&self, queue: &str, tasks: Vec<TaskSpec>) -> Result<Vec<Enqueued>, ClientError> {
        self.block_on(self.inner.enqueue_batch(queue, tasks))
    }

    pub fn dequeue(
        &self,
        queues: &[impl AsRef<str>],
        max: u16,
        lease_ms: Option<u64>,
        wait_ms: u64,
    ) -> Result<Vec<LeasedTask>, ClientError> {
        self.block_on(self.inner.dequeue(queues, max, lease_ms, wait_ms))
    }

    pub fn get_task(&self, id: u64) -> Result<TaskView, ClientError> {
        self.block_on(self.inner.get_task(id))
    }

    pub fn complete(&self, id: u64, lease: u64, result: Option<Bytes>) -> Result<TaskState, ClientError> {
        self.block_on(self.inner.complete(id, lease, result))
    }

    pub fn fail(&self, id: u64, lease: u64, error: &str, retry: bool) -> Result<TaskState, ClientError> {
        self.block_on(self.inner.fail(id, lease, error, retry))
    }

    pub fn extend(&self, id: u64, lease: u64, lease_ms: u64) -> Result<u64, ClientError> {
        self.block_on(self.inner.extend(id, lease, lease_ms))
    }

    pub fn cancel(&self, id: u64) -> Result<TaskState, ClientError> {
        self.block_on(self.inner.cancel(id))
    }

    pub fn complete_batch(&self, items: Vec<CompleteItem>) -> Result<Vec<(u64, CompleteOutcome)>, ClientError> {
        self.block_on(self.inner.complete_batch(items))
    }

    pub fn list_tasks(
        &self,
        queue: &str,
        state: TaskState,
        after: u64,
        limit: u16,
    ) -> Result<(Vec<TaskView>, Option<u64>), ClientError> {
        self.block_on(self.inner.list_tasks(queue, state, after, limit))
    }

    pub fn retry_task(&self, id: u64) -> Result<TaskState, ClientError> {
        self.block_on(self.inner.retry_task(id))
    }

    pub fn delete_task(&self, id: u64) -> Result<(), ClientError> {
        self.block_on(self.inner.delete_task(id))
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::Client").field("addr", &self.inner.addr()).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    /// Both clients may be shared between threads (docs/client.md says so).
    #[test]
    fn clients_are_send_and_sync() {
        fn shareable<T: Send + Sync>() {}
        shareable::<super::Client>();
        shareable::<crate::Client>();
    }
}
