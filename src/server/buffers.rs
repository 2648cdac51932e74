//! How big a connection's reads are, for both protocols.
//!
//! Every connection keeps one read in flight for its whole life (reactor.rs
//! says why), so an idle connection pins that read's buffer. Reads therefore
//! start small and follow what arrives: a read that fills its buffer doubles
//! the next one, up to `--read-bytes-max` ([`READ_BYTES_MAX_DEFAULT`]); any
//! other read sizes the next to
//! twice what it got, so a connection that goes quiet drops back to
//! [`READ_BYTES_MIN`] at once. Measured with 10,000 idle binary connections:
//! 11.5 -> 3.5 KB of RSS per connection (docs/benchmarks/changelog.md).

/// Bytes asked of a connection's first read, and the least any read asks
/// for: a 512-byte buffer shares its page with other connections' buffers.
pub(crate) const READ_BYTES_MIN: usize = 512;
/// `--read-bytes-max` default: the most a read asks for.
pub const READ_BYTES_MAX_DEFAULT: usize = 64 << 10;

/// The size of the next read after one of `asked` bytes returned `got`, at
/// most `max` (at least [`READ_BYTES_MIN`]).
pub(crate) fn next_read_bytes(asked: usize, got: usize, max: usize) -> usize {
    let max = max.max(READ_BYTES_MIN);
    if got >= asked {
        asked.saturating_mul(2).min(max)
    } else {
        got.saturating_mul(2).next_power_of_two().clamp(READ_BYTES_MIN, max)
    }
}

/// A buffer of `bytes` for the next read, reusing `buffer` if it has exactly
/// that capacity (its contents are dropped).
pub(crate) fn read_buffer(mut buffer: Vec<u8>, bytes: usize) -> Vec<u8> {
    buffer.clear();
    if buffer.capacity() == bytes {
        buffer
    } else {
        Vec::with_capacity(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_read_doubles_the_next_up_to_the_maximum() {
        const MAX: usize = READ_BYTES_MAX_DEFAULT;
        assert_eq!(next_read_bytes(READ_BYTES_MIN, READ_BYTES_MIN, MAX), 2 * READ_BYTES_MIN);
        assert_eq!(next_read_bytes(MAX, MAX, MAX), MAX);
        assert_eq!(next_read_bytes(4096, 4096, 6000), 6000, "never past the limit");
    }

    #[test]
    fn a_short_read_sizes_the_next_to_twice_what_came_so_a_quiet_connection_shrinks_at_once() {
        const MAX: usize = READ_BYTES_MAX_DEFAULT;
        assert_eq!(next_read_bytes(MAX, 24, MAX), READ_BYTES_MIN, "a ping after a burst");
        assert_eq!(next_read_bytes(MAX, 3_000, MAX), 8 << 10);
        assert_eq!(next_read_bytes(4 << 10, 0, MAX), READ_BYTES_MIN, "end of stream");
    }

    #[test]
    fn a_read_buffer_is_reused_only_at_the_right_size() {
        let kept = read_buffer(Vec::with_capacity(READ_BYTES_MIN), READ_BYTES_MIN);
        assert_eq!((kept.len(), kept.capacity()), (0, READ_BYTES_MIN));
        assert_eq!(read_buffer(Vec::with_capacity(READ_BYTES_MIN), 4096).capacity(), 4096);
    }
}
