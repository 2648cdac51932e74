//! How the engine holds a task's payload: in 16 bytes of the task record.
//!
//! A `Bytes` handle is 32 bytes, a third of a task record, and most payloads
//! (orders, small JSON documents) are a few hundred bytes at most. So a small
//! payload is an exact-size boxed slice, and whoever needs a `Bytes` of it (a
//! lease, a lookup, a checkpoint) gets a copy. Copying 100 bytes costs about what
//! the first `Bytes::clone` of a never-shared payload costs anyway (`bytes`
//! allocates a shared header then), and a copy does not leave that header on the
//! task for the rest of its life (measured: 32 bytes more per task in `sync`
//! mode, docs/benchmarks/changelog.md).
//!
//! A payload above [`SHARED_BYTES_MIN`] is kept as a shared `Bytes` behind one
//! more pointer, so that leasing it or checkpointing it never copies it.
//!
//! An empty payload is what a cold task (tiered storage) holds.

use bytes::Bytes;

/// Payloads longer than this are shared rather than copied when handed out.
pub(crate) const SHARED_BYTES_MIN: usize = 4 << 10;

pub(crate) enum Payload {
    /// Up to `SHARED_BYTES_MIN` bytes, allocated at its exact size (an empty one
    /// allocates nothing).
    Small(Box<[u8]>),
    /// A large payload; the extra box keeps the record at 16 bytes.
    Shared(Box<Bytes>),
}

// The point of this type: it must stay the size of a boxed slice.
const _: () = assert!(std::mem::size_of::<Payload>() == 16);

impl Payload {
    pub(crate) fn empty() -> Payload {
        Payload::Small(Box::default())
    }

    /// Takes a payload from a request. A small one that is the sole owner of an
    /// exact-size buffer (what the protocol decoders produce) moves without a
    /// copy; one that is a slice of something larger is copied, so that a task
    /// never keeps a whole receive buffer alive.
    pub(crate) fn new(bytes: Bytes) -> Payload {
        if bytes.len() > SHARED_BYTES_MIN {
            Payload::Shared(Box::new(bytes))
        } else {
            Payload::Small(Vec::from(bytes).into_boxed_slice())
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Small(bytes) => bytes,
            Payload::Shared(bytes) => bytes,
        }
    }

    /// The payload as a checkpoint row: borrowed when small (the store copies
    /// it), shared when large.
    pub(crate) fn row(&self) -> super::snapshot::PayloadRow<'_> {
        match self {
            Payload::Small(bytes) => super::snapshot::PayloadRow::Slice(bytes),
            Payload::Shared(bytes) => super::snapshot::PayloadRow::Shared(bytes),
        }
    }

    /// A `Bytes` of the payload, for a reply or a checkpoint: a copy of a small
    /// payload, a shared handle on a large one.
    pub(crate) fn to_bytes(&self) -> Bytes {
        match self {
            Payload::Small(bytes) => Bytes::copy_from_slice(bytes),
            Payload::Shared(bytes) => Bytes::clone(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_payloads_are_copied_out_and_large_ones_shared() {
        let small = Payload::new(Bytes::from(vec![7u8; 100]));
        assert!(matches!(small, Payload::Small(_)));
        let out = small.to_bytes();
        assert_eq!(&out[..], &[7u8; 100][..]);
        assert_ne!(out.as_ptr(), small.as_slice().as_ptr(), "a small payload is handed out as a copy");

        let large = Payload::new(Bytes::from(vec![9u8; SHARED_BYTES_MIN + 1]));
        assert!(matches!(large, Payload::Shared(_)));
        let out = large.to_bytes();
        assert_eq!(out.len(), SHARED_BYTES_MIN + 1);
        assert_eq!(out.as_ptr(), large.as_slice().as_ptr(), "a large payload is shared, not copied");
    }

    #[test]
    fn a_small_slice_of_a_larger_buffer_does_not_keep_the_buffer() {
        let buffer = Bytes::from(vec![1u8; 64 << 10]);
        let payload = Payload::new(buffer.slice(10..110));
        assert_eq!(payload.len(), 100);
        assert!(
            !buffer.as_ptr_range().contains(&payload.as_slice().as_ptr()),
            "the payload must be its own allocation"
        );
    }

    #[test]
    fn the_empty_payload_is_empty() {
        assert_eq!(Payload::empty().len(), 0);
        assert!(Payload::empty().to_bytes().is_empty());
    }
}
