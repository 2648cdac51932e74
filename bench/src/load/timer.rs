//! A sleep to the microsecond: a `timerfd` registered with the runtime.
//!
//! tokio's own timer has a resolution of 1 ms. The open-loop scenario sends each
//! request at its scheduled time and measures latency from that time, so a
//! send woken up to 1 ms late would add up to 1 ms to every measured latency;
//! at 50,000 requests/s over 50 connections a connection's sends are only 1 ms
//! apart. A timerfd fires within microseconds (hrtimers, no timer slack), and the
//! runtime's epoll wakes for it like for any socket.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub(crate) struct PreciseTimer {
    fd: AsyncFd<OwnedFd>,
    /// The deadline the timerfd is armed for, if any.
    armed: Option<Instant>,
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
        Ok(PreciseTimer { fd, armed: None })
    }

    fn arm(&mut self, deadline: Instant) -> io::Result<()> {
        // Relative to now: `Instant` is CLOCK_MONOTONIC on Linux but does not
        // expose its value; the difference is the few nanoseconds between the
        // two clock reads.
        let delay = deadline.saturating_duration_since(Instant::now()).max(std::time::Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: delay.as_secs() as libc::time_t,
                tv_nsec: delay.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec; the old value is not asked for.
        let result = unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if result < 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed = Some(deadline);
        Ok(())
    }

    /// Returns at `deadline` (at once if it has passed). Cancel-safe: dropped
    /// before it returns, the timer stays armed, and a later call re-arms it
    /// only for another deadline.
    pub(crate) async fn sleep_until(&mut self, deadline: Instant) -> io::Result<()> {
        loop {
            if Instant::now() >= deadline {
                return Ok(());
            }
            if self.armed != Some(deadline) {
                self.arm(deadline)?;
            }
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
                Ok(Ok(())) => self.armed = None,
                Ok(Err(e)) => return Err(e),
                // Readiness was stale (the timer was re-armed since): wait again.
                Err(_would_block) => {}
            }
        }
    }
}
