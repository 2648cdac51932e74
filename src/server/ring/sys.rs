//! The one place the io-uring reactor uses `unsafe`: the ring, the memory the
//! kernel reads or writes on its behalf, and two descriptor calls.
//!
//! Everything the kernel may touch while an operation is in flight is owned
//! here, so the rest of `ring/` is safe code that cannot free it early:
//!
//! - the provided receive buffers and their ring live for the life of the
//!   process (leaked on purpose: a reactor lives until the process stops, and
//!   freeing them while the kernel may still hold a multishot receive would
//!   be a use after free);
//! - a send's buffer is moved into [`Ring::send`] and only handed back by
//!   [`Ring::take_sent`] once the kernel has completed it and, for a
//!   zero-copy send, posted every notification (so it no longer reads it);
//! - the eventfd's 8-byte read buffer is leaked like the receive buffers.
//!
//! `user_data` carries what completed: [`Op`] in the top byte, a
//! connection's slot in the low 32 bits.
#![allow(unsafe_code)] // the one module that may (ring/mod.rs denies it elsewhere)

use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// What a completion is for (the top byte of its `user_data`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Accept = 1,
    Recv = 2,
    Send = 3,
    Wake = 4,
    Cancel = 5,
}

impl Op {
    fn from_user_data(user_data: u64) -> Option<Op> {
        Some(match user_data >> 56 {
            1 => Op::Accept,
            2 => Op::Recv,
            3 => Op::Send,
            4 => Op::Wake,
            5 => Op::Cancel,
            _ => return None,
        })
    }
}

fn user_data(op: Op, slot: u32) -> u64 {
    ((op as u64) << 56) | u64::from(slot)
}

/// One completion, copied out of the completion queue.
#[derive(Clone, Copy, Debug)]
pub(super) struct Completion {
    pub(super) op: Op,
    pub(super) slot: u32,
    pub(super) result: i32,
    pub(super) flags: u32,
}

impl Completion {
    /// More completions will follow for this operation (multishot, or a
    /// zero-copy send whose notification is to come).
    pub(super) fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// The provided buffer a receive filled.
    pub(super) fn buffer_id(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }

    /// A zero-copy send's notification: the kernel no longer reads the buffer.
    pub(super) fn is_notification(&self) -> bool {
        cqueue::notif(self.flags)
    }
}

/// The group id of the reactor's one provided-buffer ring.
const BUFFER_GROUP: u16 = 0;
const PAGE_BYTES: usize = 4096;

/// The provided receive buffers: `count` buffers of `bytes` each, and the
/// ring of entries through which they are handed (back) to the kernel.
struct BufRing {
    entries: *mut types::BufRingEntry,
    data: *mut u8,
    count: u16,
    bytes: usize,
    /// Our copy of the tail the kernel reads (entries handed out so far).
    tail: u16,
}

impl BufRing {
    fn new(count: u16, bytes: usize) -> BufRing {
        assert!(count.is_power_of_two(), "the kernel requires a power of two");
        let entries_layout = std::alloc::Layout::from_size_align(
            usize::from(count) * std::mem::size_of::<types::BufRingEntry>(),
            PAGE_BYTES,
        )
        .expect("a valid layout");
        // SAFETY: the layout has a non-zero size (count >= 1). Zeroed, the
        // tail (in entry 0's reserved field) starts at 0: nothing provided yet.
        let entries = unsafe { std::alloc::alloc_zeroed(entries_layout) }.cast::<types::BufRingEntry>();
        assert!(!entries.is_null(), "out of memory for the provided-buffer ring");
        // Leaked: the kernel may write into it until the ring is gone (module comment).
        let data = Box::leak(vec![0u8; usize::from(count) * bytes].into_boxed_slice()).as_mut_ptr();
        let mut ring = BufRing { entries, data, count, bytes, tail: 0 };
        for bid in 0..count {
            ring.provide(bid);
        }
        ring
    }

    /// Hands buffer `bid` (back) to the kernel.
    fn provide(&mut self, bid: u16) {
        let mask = self.count - 1;
        let index = usize::from(self.tail & mask);
        // SAFETY: `index` < `count`, so the entry is inside the allocation;
        // the kernel reads entries only up to the tail, which this entry is
        // past until the store below publishes it.
        let entry = unsafe { &mut *self.entries.add(index) };
        // SAFETY: `bid` < `count`, so the buffer is inside `data`.
        entry.set_addr(unsafe { self.data.add(usize::from(bid) * self.bytes) } as u64);
        entry.set_len(self.bytes as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail lives in entry 0's reserved field, inside the
        // allocation and aligned for a u16; the kernel reads it concurrently,
        // hence the atomic store with release ordering (the entry's fields
        // above are visible before the new tail).
        let tail = unsafe { &*types::BufRingEntry::tail(self.entries).cast::<std::sync::atomic::AtomicU16>() };
        tail.store(self.tail, std::sync::atomic::Ordering::Release);
    }

    /// The first `len` bytes of buffer `bid`, which a receive completion handed us.
    fn received(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < self.count && len <= self.bytes, "a completion names a buffer we provided");
        // SAFETY: inside `data` (checked above); the kernel does not write
        // into a buffer between handing it to us and `provide` giving it back,
        // and the returned borrow of `self` ends before `provide` (&mut self).
        unsafe { std::slice::from_raw_parts(self.data.add(usize::from(bid) * self.bytes), len) }
    }
}

/// A connection's send: its buffer stays here while the kernel may read it.
#[derive(Default)]
struct SendSlot {
    buffer: Vec<u8>,
    /// Bytes already sent.
    sent: usize,
    in_flight: bool,
    zero_copy: bool,
    /// Zero-copy notifications still to come.
    notifications: u32,
    failed: bool,
}

/// What a send's completion means for its connection.
pub(super) enum SendProgress {
    /// Part of the buffer is left: it was submitted again.
    Continuing,
    /// All of it was sent (the buffer comes back through `take_sent`).
    Done,
    /// The send failed (the peer reset, or the socket was shut down).
    Failed(io::Error),
    /// A zero-copy notification: nothing new for the connection.
    Notified,
}

/// Which setup flags the kernel accepted (logged at start, and in the docs).
pub(super) const SETUP_FULL: &str = "SINGLE_ISSUER+DEFER_TASKRUN";
pub(super) const SETUP_COOP: &str = "SINGLE_ISSUER+COOP_TASKRUN";
pub(super) const SETUP_PLAIN: &str = "none";

pub(super) struct Ring {
    ring: IoUring,
    pub(super) setup: &'static str,
    buffers: BufRing,
    sends: Vec<SendSlot>,
    wake_buffer: *mut u64,
    /// Whether the listener is registered as fixed file 0.
    listener_fixed: bool,
}

impl Ring {
    /// Builds a ring on the calling thread (SINGLE_ISSUER: only this thread
    /// may submit), with the flags the design wants, falling back when the
    /// kernel refuses them: DEFER_TASKRUN needs 6.1, SINGLE_ISSUER 6.0.
    pub(super) fn new(entries: u32, buffer_count: u16, buffer_bytes: usize) -> io::Result<Ring> {
        let cq_entries = entries * 4;
        let (ring, setup) = match IoUring::builder()
            .setup_single_issuer()
            // Completions are posted only when this thread asks (at its
            // enter), never by interrupting it: no task-work IPIs, batches.
            .setup_defer_taskrun()
            .setup_cqsize(cq_entries)
            .build(entries)
        {
            Ok(ring) => (ring, SETUP_FULL),
            Err(full) => match IoUring::builder()
                .setup_single_issuer()
                .setup_coop_taskrun()
                .setup_cqsize(cq_entries)
                .build(entries)
            {
                Ok(ring) => {
                    tracing::warn!(error = %full, "the kernel refused DEFER_TASKRUN; using COOP_TASKRUN");
                    (ring, SETUP_COOP)
                }
                Err(_) => {
                    tracing::warn!(error = %full, "the kernel refused SINGLE_ISSUER; using a plain ring");
                    (IoUring::builder().setup_cqsize(cq_entries).build(entries)?, SETUP_PLAIN)
                }
            },
        };
        let buffers = BufRing::new(buffer_count, buffer_bytes);
        // SAFETY: the entries (and the buffers they point to) are leaked, so
        // they stay valid for as long as the ring may use them.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(buffers.entries as u64, buffer_count, BUFFER_GROUP, 0)?;
        }
        let wake_buffer = Box::leak(Box::new(0u64)) as *mut u64;
        Ok(Ring { ring, setup, buffers, sends: Vec::new(), wake_buffer, listener_fixed: false })
    }

    /// Registers the listener as fixed file 0, so each accept skips the
    /// descriptor lookup; false if the kernel refused (the plain descriptor is used).
    pub(super) fn register_listener(&mut self, fd: RawFd) -> bool {
        self.listener_fixed = self.ring.submitter().register_files(&[fd]).is_ok();
        self.listener_fixed
    }

    /// Queues `entry`, submitting what is queued first if the queue is full.
    ///
    /// # Safety
    /// Whatever `entry` points to must stay valid until its completion.
    unsafe fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller's promise.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    pub(super) fn accept_multi(&mut self, listener: RawFd) -> io::Result<()> {
        let entry = if self.listener_fixed {
            opcode::AcceptMulti::new(types::Fixed(0))
        } else {
            opcode::AcceptMulti::new(types::Fd(listener))
        }
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(user_data(Op::Accept, 0));
        // SAFETY: a multishot accept points to no memory of ours.
        unsafe { self.push(entry) }
    }

    pub(super) fn recv_multi(&mut self, slot: u32, fd: RawFd) -> io::Result<()> {
        let entry = opcode::RecvMulti::new(types::Fd(fd), BUFFER_GROUP).build().user_data(user_data(Op::Recv, slot));
        // SAFETY: it receives into the provided buffers, which are leaked.
        unsafe { self.push(entry) }
    }

    /// Asks the kernel to end `slot`'s multishot receive (its last completion
    /// then says so, usually with ECANCELED).
    pub(super) fn cancel_recv(&mut self, slot: u32) -> io::Result<()> {
        let entry = opcode::AsyncCancel::new(user_data(Op::Recv, slot)).build().user_data(user_data(Op::Cancel, slot));
        // SAFETY: a cancel points to no memory.
        unsafe { self.push(entry) }
    }

    /// Reads the eventfd other threads write to wake this ring.
    pub(super) fn read_wake(&mut self, eventfd: RawFd) -> io::Result<()> {
        let entry = opcode::Read::new(types::Fd(eventfd), self.wake_buffer.cast::<u8>(), 8)
            .build()
            .user_data(user_data(Op::Wake, 0));
        // SAFETY: the 8-byte buffer is leaked.
        unsafe { self.push(entry) }
    }

    /// Sends `buffer` on `slot`'s socket, zero-copy if asked; the buffer is
    /// held here until [`Ring::take_sent`] gives it back.
    pub(super) fn send(&mut self, slot: u32, fd: RawFd, buffer: Vec<u8>, zero_copy: bool) -> io::Result<()> {
        let index = slot as usize;
        if self.sends.len() <= index {
            self.sends.resize_with(index + 1, SendSlot::default);
        }
        let send = &mut self.sends[index];
        assert!(!send.in_flight && send.notifications == 0, "one send at a time per connection");
        *send = SendSlot { buffer, sent: 0, in_flight: false, zero_copy, notifications: 0, failed: false };
        self.submit_send_rest(slot, fd)
    }

    fn submit_send_rest(&mut self, slot: u32, fd: RawFd) -> io::Result<()> {
        let send = &mut self.sends[slot as usize];
        let rest = &send.buffer[send.sent..];
        let (pointer, len) = (rest.as_ptr(), u32::try_from(rest.len()).unwrap_or(u32::MAX));
        let entry = if send.zero_copy {
            opcode::SendZc::new(types::Fd(fd), pointer, len).flags(libc::MSG_NOSIGNAL).build()
        } else {
            opcode::Send::new(types::Fd(fd), pointer, len).flags(libc::MSG_NOSIGNAL).build()
        }
        .user_data(user_data(Op::Send, slot));
        send.in_flight = true;
        // SAFETY: the buffer stays in `sends` (moved nowhere, not resized)
        // until its completion and every zero-copy notification have come:
        // `take_sent` refuses to give it back before.
        unsafe { self.push(entry) }
    }

    /// Accounts a send completion of `slot`, submitting the rest of a
    /// partial send.
    pub(super) fn send_completed(&mut self, completion: &Completion, fd: RawFd) -> SendProgress {
        let send = &mut self.sends[completion.slot as usize];
        if completion.is_notification() {
            send.notifications -= 1;
            return SendProgress::Notified;
        }
        send.in_flight = false;
        if send.zero_copy && completion.more() {
            send.notifications += 1;
        }
        match usize::try_from(completion.result) {
            Err(_) => {
                send.failed = true;
                SendProgress::Failed(io::Error::from_raw_os_error(-completion.result))
            }
            // Sending nothing of a non-empty buffer: the socket cannot take more.
            Ok(0) => {
                send.failed = true;
                SendProgress::Failed(io::Error::from(io::ErrorKind::WriteZero))
            }
            Ok(sent) => {
                send.sent += sent;
                if send.sent < send.buffer.len() {
                    match self.submit_send_rest(completion.slot, fd) {
                        Ok(()) => SendProgress::Continuing,
                        Err(error) => SendProgress::Failed(error),
                    }
                } else {
                    SendProgress::Done
                }
            }
        }
    }

    /// Whether the kernel holds nothing of `slot`'s send any more.
    pub(super) fn send_idle(&self, slot: u32) -> bool {
        self.sends.get(slot as usize).is_none_or(|send| !send.in_flight && send.notifications == 0)
    }

    /// Gives back `slot`'s send buffer once the kernel is done with it.
    pub(super) fn take_sent(&mut self, slot: u32) -> Option<Vec<u8>> {
        if !self.send_idle(slot) {
            return None;
        }
        self.sends.get_mut(slot as usize).map(|send| std::mem::take(&mut send.buffer))
    }

    /// The bytes a receive completion delivered in provided buffer `bid`;
    /// call [`Ring::recycle`] once they are copied.
    pub(super) fn received(&self, bid: u16, len: usize) -> &[u8] {
        self.buffers.received(bid, len)
    }

    pub(super) fn recycle(&mut self, bid: u16) {
        self.buffers.provide(bid);
    }

    /// Submits what is queued and collects completions: waits up to `wait`
    /// for at least one (`None`: does not wait, but still runs the deferred
    /// work that posts the completions already due).
    pub(super) fn submit_and_collect(&mut self, wait: Option<Duration>, into: &mut Vec<Completion>) -> io::Result<()> {
        let result = match wait {
            Some(wait) => {
                let timespec = types::Timespec::new().sec(wait.as_secs()).nsec(wait.subsec_nanos());
                let args = types::SubmitArgs::new().timespec(&timespec);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => {
                let queued = self.ring.submission().len() as u32;
                // SAFETY: a plain enter without an argument; GETEVENTS runs
                // the deferred task work (DEFER_TASKRUN posts completions
                // only then) without waiting, since min_complete is 0.
                unsafe {
                    self.ring.submitter().enter::<libc::sigset_t>(
                        queued,
                        0,
                        io_uring::EnterFlags::GETEVENTS.bits(),
                        None,
                    )
                }
            }
        };
        match result {
            Ok(_) => {}
            Err(error) if matches!(error.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
            Err(error) => return Err(error),
        }
        for entry in self.ring.completion() {
            let Some(op) = Op::from_user_data(entry.user_data()) else {
                panic!("a completion with user_data {:#x} we never submitted", entry.user_data());
            };
            into.push(Completion { op, slot: entry.user_data() as u32, result: entry.result(), flags: entry.flags() });
        }
        Ok(())
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Send buffers the kernel may still read are leaked, not freed
        // (the module comment): this only happens as the process stops.
        for send in self.sends.drain(..) {
            if send.in_flight || send.notifications > 0 {
                std::mem::forget(send.buffer);
            }
        }
    }
}

/// An eventfd another thread writes (through [`wake`]) to wake the ring.
pub(super) fn eventfd() -> io::Result<File> {
    // SAFETY: a plain system call with constant flags.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Adds one to the eventfd's counter, which completes the ring's read.
pub(super) fn wake(eventfd: &File) {
    // EAGAIN (the counter is at its maximum) still leaves the fd readable.
    let _ = (&*eventfd).write(&1u64.to_ne_bytes());
}

/// Takes ownership of a descriptor a multishot accept returned.
pub(super) fn adopt(fd: i32) -> OwnedFd {
    assert!(fd >= 0);
    // SAFETY: the kernel just created this descriptor for us (an accept
    // completion's result); nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
