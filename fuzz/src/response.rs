//! What every rendered HTTP response must look like, whatever the request was:
//! one complete response, a `Content-Length` that is the length of the body, a
//! `Connection` header that says what the server will do, and a JSON body.

/// Checks `bytes` (exactly one response) and returns its status code.
/// `head_only`: the request was `HEAD`, so the body is left out while
/// `Content-Length` still gives its length.
pub fn check(bytes: &[u8], keep_alive: bool, head_only: bool) -> u16 {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(head_len)) => head_len,
        other => panic!("not one complete HTTP response ({other:?}): {}", String::from_utf8_lossy(bytes)),
    };
    assert_eq!(response.version, Some(1), "HTTP/1.1 responses only");
    let code = response.code.expect("a complete response has a status");
    assert!((100..600).contains(&code), "status {code}");
    let header = |name: &str| {
        let mut found = response.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name));
        let value = found.next().map(|h| h.value);
        assert!(found.next().is_none(), "header {name} sent twice");
        value
    };
    let length = header("content-length").expect("every response has a Content-Length");
    let length: usize = std::str::from_utf8(length).ok().and_then(|l| l.parse().ok()).expect("a decimal length");
    let connection = header("connection").expect("every response says whether the connection stays");
    let expected: &[u8] = if keep_alive { b"keep-alive" } else { b"close" };
    assert_eq!(connection, expected, "Connection header against keep_alive={keep_alive}");
    let body = &bytes[head_len..];
    if head_only {
        assert!(body.is_empty(), "a response to HEAD has no body");
        return code;
    }
    assert_eq!(body.len(), length, "Content-Length against the body");
    // JSON by RFC 8259's grammar, which is what the server accepts in a request
    // (serde_json's `RawValue`): a string escape may be a lone surrogate
    // (`"\udc00"`), which `serde_json::Value` would refuse.
    if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        // A payload nested close to serde_json's depth limit is accepted in a
        // request and then sits a few levels deeper in the reply; only the
        // checker's own limit is hit then, not a fault of the body.
        assert!(
            error.to_string().starts_with("recursion limit exceeded"),
            "the body is not JSON ({error}): {}",
            String::from_utf8_lossy(body)
        );
    }
    code
}
