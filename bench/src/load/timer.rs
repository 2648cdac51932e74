//! Sleeps to the microsecond: a `timerfd` registered with the runtime.
//!
//! tokio's own timer has a resolution of 1 ms. The open-loop scenario sends each
//! request at its scheduled time and measures latency from that time, so a
//! send woken up to 1 ms late would add up to 1 ms to every measured latency;
//! at 50,000 requests/s over 50 connections a connection's sends are only 1 ms
//! apart. A timerfd fires within microseconds (hrtimers, no timer slack), and the
//! runtime's epoll wakes for it like for any socket.
//!
//! The open loop's schedule is periodic, so the timer is armed once as a
//! periodic timer (drift-free: the kernel keeps absolute expiry times) rather
//! than once per request, which saves a system call per request.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// What the driver waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// A point of the periodic schedule set with [`PreciseTimer::set_periodic`].
    Scheduled(Instant),
    /// Any instant (a one-shot timer).
    At(Instant),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Armed {
    Idle,
    Once(Instant),
    Periodic,
}

pub(crate) struct PreciseTimer {
    fd: AsyncFd<OwnedFd>,
    armed: Armed,
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec { tv_sec: d.as_secs() as libc::time_t, tv_nsec: d.subsec_nanos() as libc::c_long }
}

impl PreciseTimer {
    pub(crate) fn new() -> io::Result<PreciseTimer> {
        // SAFETY: timerfd_create has no memory arguments; a non-negative result
        // is a new descriptor that nothing else owns.
        let raw = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor owned by nothing else (above).
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an OwnedFd keeps its descriptor open and the same until it
        // is dropped, which only the AsyncFd that owns it can do.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        Ok(PreciseTimer { fd, armed: Armed::Idle })
    }

    /// Arms the timer to fire at `first` (relative to now: `Instant` is
    /// CLOCK_MONOTONIC on Linux but does not expose its value; the error is the
    /// few nanoseconds between two clock reads), then every `interval` if given.
    fn arm(&mut self, first: Instant, interval: Option<Duration>) -> io::Result<()> {
        // A zero it_value would disarm the timer: fire after 1 ns instead.
        let delay = first.saturating_duration_since(Instant::now()).max(Duration::from_nanos(1));
        let spec =
            libc::itimerspec { it_interval: timespec(interval.unwrap_or(Duration::ZERO)), it_value: timespec(delay) };
        // SAFETY: `spec` is a valid itimerspec; the old value is not asked for.
        let result = unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if result < 0 {
            return Err(io::Error::last_os_error());
        }
        // A re-armed timerfd has no pending expiration; any readiness tokio
        // still holds for it is stale and is cleared on the next failed read.
        self.armed = match interval {
            Some(_) => Armed::Periodic,
            None => Armed::Once(first),
        };
        Ok(())
    }

    /// Fires at `first + k * interval` for every k with that instant still
    /// ahead, until re-armed: a `first` in the past keeps its phase.
    pub(crate) fn set_periodic(&mut self, first: Instant, interval: Duration) -> io::Result<()> {
        let interval = interval.max(Duration::from_nanos(1));
        let behind = Instant::now().saturating_duration_since(first);
        let periods = behind.as_nanos().div_ceil(interval.as_nanos());
        let first = first + Duration::from_nanos((periods * interval.as_nanos()).min(u128::from(u64::MAX)) as u64);
        self.arm(first, Some(interval))
    }

    pub(crate) fn is_periodic(&self) -> bool {
        self.armed == Armed::Periodic
    }

    /// Waits for one expiration and consumes it.
    async fn expiry(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            let read = guard.try_io(|fd| {
                // SAFETY: reads at most 8 bytes into an 8-byte buffer.
                let n = unsafe { libc::read(fd.as_raw_fd(), expirations.as_mut_ptr().cast(), expirations.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match read {
                Ok(Ok(())) => {
                    // The read took every pending expiration: not readable
                    // until the next one (saves a failing read next time).
                    guard.clear_ready();
                    return Ok(());
                }
                Ok(Err(e)) => return Err(e),
                // Readiness was stale (the timer was re-armed since): wait again.
                Err(_would_block) => {}
            }
        }
    }

    /// Returns at the instant `wake` names (at once if it has passed).
    /// Cancel-safe: dropped before it returns, the timer stays armed, and a
    /// later call re-arms it only for another instant.
    pub(crate) async fn wait(&mut self, wake: Wake) -> io::Result<()> {
        let deadline = match wake {
            Wake::Scheduled(deadline) | Wake::At(deadline) => deadline,
        };
        loop {
            if Instant::now() >= deadline {
                return Ok(());
            }
            let covered = match (wake, self.armed) {
                (Wake::Scheduled(_), Armed::Periodic) => true,
                (_, Armed::Once(at)) => at == deadline,
                _ => false,
            };
            if !covered {
                self.arm(deadline, None)?;
            }
            self.expiry().await?;
            if let Armed::Once(_) = self.armed {
                self.armed = Armed::Idle;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn one_shot_and_periodic_waits_end_on_time() {
        runtime().block_on(async {
            let mut timer = PreciseTimer::new().unwrap();
            let start = Instant::now();
            let at = start + Duration::from_micros(300);
            timer.wait(Wake::At(at)).await.unwrap();
            assert!(Instant::now() >= at);

            let interval = Duration::from_micros(200);
            let first = Instant::now() + interval;
            timer.set_periodic(first, interval).unwrap();
            for k in 0..5u32 {
                let point = first + interval * k;
                timer.wait(Wake::Scheduled(point)).await.unwrap();
                assert!(Instant::now() >= point);
            }
            // A one-shot wait after the periodic ones re-arms the timer.
            let at = Instant::now() + Duration::from_micros(100);
            timer.wait(Wake::At(at)).await.unwrap();
            assert!(Instant::now() >= at);
            assert!(!timer.is_periodic());
        });
    }
}
