//! Converts docs/openapi.yaml, the HTTP API's OpenAPI description, to JSON in
//! `OUT_DIR`, which `src/http/openapi.rs` compiles into the server and serves
//! at `GET /openapi.json`.
//!
//! Why here: the YAML file stays the one source people read and edit (no
//! generated copy in the repository to keep in step), and the server carries
//! no YAML parser: the conversion runs once per change of the file, at build
//! time. A file that is not valid YAML, or has a key that is not a string,
//! fails the build, naming the file.

use std::path::PathBuf;

const SPEC: &str = "docs/openapi.yaml";

fn main() {
    println!("cargo::rerun-if-changed={SPEC}");
    let text = std::fs::read_to_string(SPEC).unwrap_or_else(|e| panic!("cannot read {SPEC}: {e}"));
    // `serde_yaml_ng::Value` keeps the mappings in the file's order, so the
    // JSON reads in the same order as the YAML.
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{SPEC}: {e}"));
    let mut json = serde_json::to_string(&value).unwrap_or_else(|e| panic!("{SPEC} cannot be JSON: {e}"));
    // Like every JSON body the server sends, it ends its line.
    json.push('\n');
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("openapi.json");
    std::fs::write(&out, json).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}
