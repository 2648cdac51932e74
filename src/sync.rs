//! Locks that are never reused after a panic.
//!
//! A thread that panics while holding a lock may leave what it guards half
//! changed: an engine index, a WAL inbox, a connection table. Reusing it
//! (`PoisonError::into_inner`) would serve that state as if nothing happened.
//! The `tqx` binary is built with `panic = "abort"` (Cargo.toml) and a panic hook
//! that logs and aborts, so a panic ends the process before anyone can see a
//! poisoned lock; these functions make the same guarantee where unwinding is on
//! (test builds, the library used elsewhere): whoever meets a poisoned lock
//! panics too, naming it, instead of carrying on. Every lock in the server goes
//! through here (issue 15: "no poisoned lock is reused").

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Locks `mutex`; panics if a thread panicked while holding it.
#[track_caller]
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(_) => poisoned(),
    }
}

/// `Condvar::wait`, with the same rule as [`lock`].
#[track_caller]
pub fn wait<'a, T>(condvar: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    match condvar.wait(guard) {
        Ok(guard) => guard,
        Err(_) => poisoned(),
    }
}

/// `Condvar::wait_timeout` (without the timed-out flag), with the same rule as [`lock`].
#[track_caller]
pub fn wait_timeout<'a, T>(condvar: &Condvar, guard: MutexGuard<'a, T>, timeout: Duration) -> MutexGuard<'a, T> {
    match condvar.wait_timeout(guard, timeout) {
        Ok((guard, _)) => guard,
        Err(_) => poisoned(),
    }
}

#[cold]
#[track_caller]
pub fn poisoned() -> ! {
    panic!("a lock was poisoned: another thread panicked while holding it, so what it guards may be half changed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_poisoned_lock_is_never_handed_out_again() {
        let mutex = Arc::new(Mutex::new(0));
        let holder = mutex.clone();
        let _ = std::thread::spawn(move || {
            let _guard = lock(&holder);
            panic!("panics while holding the lock");
        })
        .join();
        assert!(mutex.is_poisoned());
        let reused = std::panic::catch_unwind(|| *lock(&mutex));
        assert!(reused.is_err(), "the poisoned lock was handed out");
    }
}
