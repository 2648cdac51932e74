//! Where a payload or result comes from, and the strict JSON rule.
//!
//! An argument is the body's text itself, `@PATH` (the file's contents) or
//! `-` (standard input, read to its end). Neither `@` nor `-` can start a
//! JSON document, so the three cannot be confused. The text must be one JSON
//! value (serde_json's parser; surrounding whitespace is dropped, the value is
//! sent byte for byte); anything else is a usage error naming the line and
//! column serde_json stopped at, and nothing is sent.
//!
//! `--raw` skips the check: over HTTP the text is sent as a JSON string (so it
//! must be UTF-8), exactly as read, a final newline included; over `--binary`,
//! whose payloads are bytes, the bytes are sent as they are (any bytes; a
//! reader over HTTP sees them verbatim if they happen to be JSON, else as
//! `null` plus `payload_base64`).

use std::io::Read;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::exit::Failure;

/// The most a body (a payload, a result) may be read from a file or standard
/// input: far above any server's `--max-body-bytes` (at most 3.9 MB), so
/// only a mistake (the wrong file) is refused here, before it is held in memory.
pub(super) const BODY_BYTES_MAX: u64 = 64 << 20;

/// The bytes `arg` names (text, `@PATH` or `-`), and how to name where they
/// came from in a message.
pub(super) fn read_source(arg: &str, what: &str) -> Result<(Vec<u8>, String), Failure> {
    if arg == "-" {
        let bytes = read_bounded(std::io::stdin().lock(), BODY_BYTES_MAX)
            .map_err(|e| Failure::usage(format!("cannot read the {what} from standard input: {e}")))?;
        return Ok((bytes, "standard input".to_string()));
    }
    if let Some(path) = arg.strip_prefix('@') {
        let file =
            std::fs::File::open(path).map_err(|e| Failure::usage(format!("cannot read {what} file {path}: {e}")))?;
        let bytes = read_bounded(file, BODY_BYTES_MAX)
            .map_err(|e| Failure::usage(format!("cannot read {what} file {path}: {e}")))?;
        return Ok((bytes, format!("file {path}")));
    }
    Ok((arg.as_bytes().to_vec(), "argument".to_string()))
}

/// Reads to the end, refusing more than `bytes_max`.
pub(super) fn read_bounded(reader: impl Read, bytes_max: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.take(bytes_max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > bytes_max {
        return Err(std::io::Error::other(format!("more than {bytes_max} bytes")));
    }
    Ok(bytes)
}

/// The payload or result `arg` gives, as the bytes to send: one JSON value's
/// exact text; with `raw`, the text as a JSON string over HTTP or the bytes
/// as they are over `--binary`.
pub(super) fn body(arg: &str, raw: bool, binary: bool, what: &str) -> Result<Bytes, Failure> {
    let (bytes, origin) = read_source(arg, what)?;
    if raw {
        return raw_body(bytes, binary, what, &origin);
    }
    strict_json(&bytes).map(Bytes::copy_from_slice).map_err(|error| {
        Failure::usage(format!(
            "the {what} ({origin}) is not valid JSON: {error} (to send text as it is, add --raw; \
             a JSON string needs its quotes: '\"text\"')"
        ))
    })
}

/// `bytes` as one JSON value: its exact text without surrounding whitespace,
/// or serde_json's error, which names the line and column.
pub(super) fn strict_json(bytes: &[u8]) -> Result<&[u8], serde_json::Error> {
    let value: &RawValue = serde_json::from_slice(bytes)?;
    Ok(value.get().as_bytes())
}

fn raw_body(bytes: Vec<u8>, binary: bool, what: &str, origin: &str) -> Result<Bytes, Failure> {
    if binary {
        return Ok(Bytes::from(bytes));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        Failure::usage(format!(
            "the {what} ({origin}) is not UTF-8 text (byte {} is not), so HTTP cannot send it as a JSON \
             string; --binary sends bytes as they are",
            e.utf8_error().valid_up_to()
        ))
    })?;
    // Serializing a str cannot fail.
    Ok(Bytes::from(serde_json::to_vec(&text).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::exit::Exit;

    #[test]
    fn strict_json_keeps_the_value_text_and_names_the_position_of_an_error() {
        assert_eq!(strict_json(b" {\"a\": [1, 2.50]}\n").unwrap(), b"{\"a\": [1, 2.50]}");
        let error = strict_json(b"{\"a\": 1,\n \"b\": nope}").unwrap_err();
        assert_eq!((error.line(), error.column()), (2, 8), "{error}");
        assert!(error.to_string().contains("line 2 column 8"), "{error}");
        for bad in [&b"plain text"[..], b"", b"1 2", b"'x'", b"\xff"] {
            assert!(strict_json(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn raw_is_a_json_string_over_http_and_the_bytes_over_binary() {
        let http = raw_body(b"say \"hi\"\n".to_vec(), false, "payload", "argument").unwrap();
        assert_eq!(&http[..], br#""say \"hi\"\n""#);
        let binary = raw_body(b"\xff\x00x".to_vec(), true, "payload", "argument").unwrap();
        assert_eq!(&binary[..], b"\xff\x00x");
        let refused = raw_body(b"ok\xff".to_vec(), false, "payload", "argument").unwrap_err();
        assert_eq!(refused.exit, Exit::Usage);
        assert!(refused.message.contains("byte 2"), "{}", refused.message);
    }
}
