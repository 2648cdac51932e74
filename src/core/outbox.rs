//! An outbox: replies held until the durable watermark passes the LSN of the
//! newest state they show (docs/durability.md, "Guarantees"). Pure: each
//! reactor keeps one for its connections (`server/binary_conn.rs`'s delivery
//! task), and the simulator (`crate::sim`) keeps one per simulated reactor,
//! so both run this code.
//!
//! Replies are released in LSN order, and replies with the same LSN in the
//! order they were held. Every held reply belongs to a request a connection
//! counts as in flight, so the connection bounds (docs/connections.md) bound
//! the outbox too.

use std::collections::VecDeque;

#[derive(Debug)]
pub struct Outbox<T> {
    /// Sorted by LSN; equal LSNs in arrival order.
    held: VecDeque<(u64, T)>,
}

impl<T> Default for Outbox<T> {
    fn default() -> Self {
        Outbox { held: VecDeque::new() }
    }
}

impl<T> Outbox<T> {
    /// Holds `item` until the watermark reaches `lsn`.
    pub fn hold(&mut self, lsn: u64, item: T) {
        // Replies mostly arrive in LSN order (they are sent under the engine
        // lock), so this is nearly always a push at the back.
        let at = match self.held.back() {
            Some(&(last, _)) if last > lsn => self.held.partition_point(|&(held, _)| held <= lsn),
            _ => self.held.len(),
        };
        self.held.insert(at, (lsn, item));
    }

    /// Hands `release` every item whose LSN is at most `durable_lsn`, oldest first.
    pub fn release(&mut self, durable_lsn: u64, mut release: impl FnMut(T)) {
        while self.held.front().is_some_and(|&(lsn, _)| lsn <= durable_lsn) {
            if let Some((_, item)) = self.held.pop_front() {
                release(item);
            }
        }
    }

    /// Hands `release` every item (the log failed: none will ever be durable).
    pub fn release_all(&mut self, mut release: impl FnMut(T)) {
        for (_, item) in self.held.drain(..) {
            release(item);
        }
    }

    /// The smallest LSN held (`u64::MAX` if none): the advance worth waking for.
    pub fn lsn_min(&self) -> u64 {
        self.held.front().map_or(u64::MAX, |&(lsn, _)| lsn)
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_leave_when_the_watermark_passes_them_in_lsn_then_arrival_order() {
        let mut outbox = Outbox::default();
        outbox.hold(5, "a");
        outbox.hold(7, "b");
        outbox.hold(5, "c");
        outbox.hold(3, "d"); // a late reply (a cold payload read) for an older state
        assert_eq!(outbox.lsn_min(), 3);
        let mut out = Vec::new();
        outbox.release(4, |item| out.push(item));
        assert_eq!(out, ["d"]);
        outbox.release(6, |item| out.push(item));
        assert_eq!(out, ["d", "a", "c"], "nothing past the watermark leaves");
        assert_eq!((outbox.len(), outbox.lsn_min()), (1, 7));
        outbox.release_all(|item| out.push(item));
        assert_eq!(out, ["d", "a", "c", "b"]);
        assert_eq!(outbox.lsn_min(), u64::MAX);
    }
}
