//! The HTTP API against its OpenAPI 3.1 description (docs/openapi.yaml, served
//! at `GET /openapi.json`): schemathesis (PyPI, pinned in tools/env.sh) runs
//! its checks against a real server, and the description is checked against
//! docs/http-api.md (every endpoint heading, every error code by status).
//!
//! schemathesis lives in a virtualenv under the build cache
//! (`$HOME/.cache/taskqueuex/venv`, or `$TQX_VENV`), made by
//! `ensure_python_test_deps` in tools/env.sh, which tools/test runs. Without
//! it the schemathesis test fails, saying how to install it: the check is the
//! point.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::{create_token, Server};
use taskqueuex::http::openapi::SPEC_JSON;

/// The run's seed: the same cases every time (the seed is the bug report;
/// `TQX_SCHEMATHESIS_SEED` replays another).
const SEED_DEFAULT: u64 = 19;
/// Cases per operation and phase: ~1,000 requests in all, 10-20 s on 2
/// loaded cores.
const MAX_EXAMPLES: u32 = 10;
/// A run far past its usual 20 s is stuck, not slow.
const RUN_TIMEOUT: Duration = Duration::from_secs(240);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `st` of the virtualenv tools/env.sh makes.
fn schemathesis() -> PathBuf {
    let venv = std::env::var_os("TQX_VENV").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        home.join(".cache/taskqueuex/venv")
    });
    let st = venv.join("bin/st");
    assert!(
        st.is_file(),
        "schemathesis is not installed at {}: run `. tools/env.sh && ensure_python_test_deps` (tools/test does), \
         which makes that virtualenv and installs the pinned version from PyPI",
        st.display()
    );
    st
}

/// Every response of a real server (with `--tokens`, so that authentication
/// is checked too) matches docs/openapi.yaml: documented status, content
/// type, body schema and headers, no 5xx, 405 with `Allow` for methods not
/// described, invalid requests refused and valid ones accepted, 401 without
/// the token. The checks are schemathesis's defaults (all of them); what
/// src/tests/schemathesis/ adjusts says why.
#[test]
fn every_response_of_the_server_matches_its_openapi_description() {
    let st = schemathesis();
    let dir = tqx_testkit::TempDir::create(support::fresh_dir()).expect("temporary directory");
    let tokens = dir.path().join("tokens");
    let token = create_token(&tokens, &["--scope", "admin", "--name", "schemathesis"]);
    let server = Server::start(&["--tokens", tokens.to_str().expect("a UTF-8 path")]);
    let seed = std::env::var("TQX_SCHEMATHESIS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(SEED_DEFAULT);
    let assets = repo().join("src/tests/schemathesis");
    let mut command = Command::new(&st);
    command
        .current_dir(dir.path())
        .env("SCHEMATHESIS_HOOKS", assets.join("hooks.py"))
        .arg("--config-file")
        .arg(assets.join("schemathesis.toml"))
        .arg("run")
        .arg(format!("http://{}/openapi.json", server.addr))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--seed", &seed.to_string(), "--max-examples", &MAX_EXAMPLES.to_string()])
        // Strings in ASCII: the server's length limits count bytes (docs/limits.md)
        // and JSON Schema's maxLength counts characters; for ASCII they agree.
        .args(["--generation-codec", "ascii"])
        // Nothing written into the working directory between runs.
        .args(["--generation-database", "none"])
        .args(["--workers", "2", "--request-timeout", "10", "--no-color"]);
    let output = tqx_testkit::output_within(&mut command, RUN_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", st.display()));
    let report = format!("{}{}", output.stdout, output.stderr);
    assert!(
        output.status.is_some_and(|s| s.success()),
        "schemathesis found responses that do not match docs/openapi.yaml (seed {seed}; exit {:?}):\n{report}\n\
         --- server stderr:\n{}",
        output.status,
        server.stderr()
    );
    // A run that tested nothing would also exit 0. schemathesis leaves out the
    // operation that serves the description it reads (`GET /openapi.json`).
    let number_after = |label: &str| -> Option<(usize, Option<usize>)> {
        let rest = report.split(label).nth(1)?.lines().next()?.trim();
        let (first, total) = rest.split_once('/').map_or((rest, None), |(a, b)| (a, Some(b)));
        Some((first.parse().ok()?, total.and_then(|t| t.parse().ok())))
    };
    let (selected, total) = number_after("Selected: ").unwrap_or_else(|| panic!("no `Selected:` line:\n{report}"));
    let (tested, _) = number_after("Tested: ").unwrap_or_else(|| panic!("no `Tested:` line:\n{report}"));
    assert_eq!(total, Some(operations_count() - 1), "every operation but GET /openapi.json is known:\n{report}");
    assert_eq!(tested, selected, "every selected operation was tested:\n{report}");
}

/// Operations in the description.
fn operations_count() -> usize {
    let spec: Value = serde_json::from_str(SPEC_JSON).expect("the compiled-in description is JSON");
    let paths = spec["paths"].as_object().expect("paths");
    paths
        .values()
        .flat_map(|item| item.as_object().expect("a path item").keys())
        .filter(|key| HTTP_METHODS.contains(&key.as_str()))
        .count()
}

#[test]
fn get_openapi_json_serves_the_description_as_json_without_a_token() {
    let dir = tqx_testkit::TempDir::create(support::fresh_dir()).expect("temporary directory");
    let tokens = dir.path().join("tokens");
    create_token(&tokens, &["--scope", "admin"]);
    let server = Server::start(&["--tokens", tokens.to_str().expect("a UTF-8 path")]);
    let mut client = server.client();
    let response = client.get("/openapi.json");
    assert_eq!(response.status, 200, "{response:?}");
    support::assert_json_content_type(&response);
    let spec: Value = serde_json::from_str(SPEC_JSON).expect("the compiled-in description is JSON");
    assert_eq!(response.body, spec);
    assert_eq!(response.body["openapi"], "3.1.0");
    // Other endpoints still need the token: the description shows the API, not data.
    assert_eq!(client.get("/v1/queues").status, 401);
    let response = client.request("POST", "/openapi.json", Some(&json!({})));
    response.assert_error(405, "method_not_allowed");
    assert_eq!(response.header("allow"), Some("GET"));
}

/// Clients built from the description percent-encode a path parameter's
/// reserved characters (RFC 6570), and `:` in a queue name is one: `%3A`
/// names the same queue as `:` (found by schemathesis).
#[test]
fn a_percent_encoded_queue_name_or_task_id_in_a_path_is_decoded() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let response = client.put("/v1/queues/billing%3Aeu", json!({}));
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body["name"], "billing:eu");
    assert_eq!(client.get("/v1/queues/billing:eu").status, 200);
    let id = client.enqueue("billing:eu", json!({"payload": 1}));
    let encoded_id: String = id.bytes().map(|b| format!("%{b:02X}")).collect();
    let task = client.get(&format!("/v1/tasks/{encoded_id}"));
    assert_eq!((task.status, &task.body["id"]), (200, &json!(id)), "{task:?}");
    client.get("/v1/queues/billing%3").assert_invalid("queue");
    client.get("/v1/queues/billing%zz").assert_invalid("queue");
    client.get("/v1/queues/%FF").assert_invalid("queue");
    client.get("/v1/tasks/1%2").assert_invalid("id");
    // Decoded, a name is checked like any other.
    client.get("/v1/queues/a%2Fb").assert_invalid("queue");
}

/// docs/openapi.yaml and docs/http-api.md describe the same API: the same
/// endpoints (http-api.md's `### \`METHOD /path\`` headings), and the same
/// error codes under the same statuses (http-api.md's error table; the spec's
/// per-status `code` enums).
#[test]
fn the_openapi_description_and_http_api_md_name_the_same_endpoints_and_error_codes() {
    let spec: Value = serde_json::from_str(SPEC_JSON).expect("the compiled-in description is JSON");
    let doc = std::fs::read_to_string(repo().join("docs/http-api.md")).expect("read docs/http-api.md");

    let described: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            let methods = item.as_object().expect("a path item").keys();
            methods.filter(|m| HTTP_METHODS.contains(&m.as_str())).map(|m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let documented = endpoint_headings(&doc);
    assert_eq!(
        described,
        documented,
        "endpoints in docs/openapi.yaml but not headed in docs/http-api.md: {:?}; headed but not described: {:?}",
        described.difference(&documented).collect::<Vec<_>>(),
        documented.difference(&described).collect::<Vec<_>>()
    );

    assert_eq!(error_codes_by_status_in_spec(&spec), error_table(&doc), "spec (left) and http-api.md's error table");
}

const HTTP_METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// `(METHOD, /path)` of every `### ` heading that starts with a code span
/// `METHOD /path...`, and of every further such span in it (`GET /healthz`,
/// `HEAD /healthz`); the path ends at its query (`?`) or optional part (`[`).
fn endpoint_headings(doc: &str) -> BTreeSet<(String, String)> {
    let mut endpoints = BTreeSet::new();
    for heading in doc.lines().filter_map(|line| line.strip_prefix("### `")) {
        for span in format!("`{heading}").split('`').skip(1).step_by(2) {
            let Some((method, target)) = span.split_once(' ') else { continue };
            if !method.bytes().all(|b| b.is_ascii_uppercase()) || !target.starts_with('/') {
                continue;
            }
            let path = target.split(['?', '[']).next().unwrap_or(target);
            // The dashboard's pages are HTML for people, not part of the API
            // the description describes (http-api.md says so).
            if path == "/ui" || path.starts_with("/ui/") {
                continue;
            }
            endpoints.insert((method.to_owned(), path.to_owned()));
        }
    }
    assert!(endpoints.len() >= 10, "docs/http-api.md's endpoint headings were not found: {endpoints:?}");
    endpoints
}

/// The `| status | \`code\`, ... | when |` rows of http-api.md's "## Errors" table.
fn error_table(doc: &str) -> BTreeMap<u16, BTreeSet<String>> {
    let section = doc.split("\n## Errors\n").nth(1).expect("docs/http-api.md has an Errors section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut table: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
    for row in section.lines().filter(|line| line.starts_with("| ")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (Some(status), Some(codes)) = (cells.get(1).and_then(|s| s.parse::<u16>().ok()), cells.get(2)) else {
            continue;
        };
        let codes = codes.split('`').skip(1).step_by(2).map(str::to_owned);
        table.entry(status).or_default().extend(codes);
    }
    assert!(table.len() >= 8, "docs/http-api.md's error table was not found: {table:?}");
    table
}

/// Every `code` enum of an error body the spec gives a status: under each
/// operation's responses, and the errors any request may get (schemas with
/// `x-status`).
fn error_codes_by_status_in_spec(spec: &Value) -> BTreeMap<u16, BTreeSet<String>> {
    let mut codes: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
    for item in spec["paths"].as_object().expect("paths").values() {
        for operation in item.as_object().expect("a path item").values() {
            let Some(responses) = operation.get("responses").and_then(Value::as_object) else { continue };
            for (status, response) in responses {
                let status: u16 = status.parse().expect("a numeric status");
                let response = resolve(spec, response);
                let Some(schema) = response.pointer("/content/application~1json/schema") else { continue };
                codes.entry(status).or_default().extend(enum_codes(spec, schema));
            }
        }
    }
    for schema in spec["components"]["schemas"].as_object().expect("schemas").values() {
        if let Some(status) = schema.get("x-status").and_then(Value::as_u64) {
            let status = u16::try_from(status).expect("a status");
            codes.entry(status).or_default().extend(enum_codes(spec, schema));
        }
    }
    codes.retain(|_, codes| !codes.is_empty());
    codes
}

fn enum_codes(spec: &Value, schema: &Value) -> Vec<String> {
    let schema = resolve(spec, schema);
    let mut codes: Vec<String> = schema
        .pointer("/properties/error/properties/code/enum")
        .and_then(Value::as_array)
        .map(|codes| codes.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    for part in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        codes.extend(enum_codes(spec, part));
    }
    codes
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(spec: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("a local $ref: {reference}"));
            resolve(spec, spec.pointer(pointer).unwrap_or_else(|| panic!("$ref {reference} resolves")))
        }
        None => value,
    }
}
