//! `GET /openapi.json`: the HTTP API's OpenAPI 3.1 description, compiled in.
//!
//! The source is docs/openapi.yaml; `build.rs` converts it to JSON at build
//! time and this module serves those bytes as they are (no YAML parser in the
//! server, no generated copy in the repository). It needs no token: it shows
//! the API, not the server's data (docs/security.md). `src/tests/openapi.rs`
//! checks the server against it with schemathesis, and it against
//! docs/http-api.md.

use super::render;

/// Where the description is served.
pub const PATH: &str = "/openapi.json";

/// docs/openapi.yaml as JSON (made by `build.rs`).
pub const SPEC_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/openapi.json"));

/// The whole response to `GET /openapi.json`: `200`, `application/json`.
pub(super) fn response(keep_alive: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(SPEC_JSON.len() + 128);
    render::render_document("application/json", SPEC_JSON.as_bytes(), keep_alive, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_in_description_is_openapi_3_1_json() {
        let spec: serde_json::Value = serde_json::from_str(SPEC_JSON).expect("build.rs writes JSON");
        assert!(spec["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")), "{}", spec["openapi"]);
        assert!(spec["paths"][PATH]["get"].is_object(), "the description describes itself");
    }
}
