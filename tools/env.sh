# Sourced by tools/run and tools/test: one place for the build environment.
#
# The build cache lives outside the clone, so a fresh clone (CI starts from one)
# reuses dependencies compiled by an earlier build on this machine; with RocksDB
# that saves ~10 minutes. Everything builds with one profile (`--release`), so no
# heavy dependency is compiled twice.

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/taskqueuex/target}"
mkdir -p "$CARGO_TARGET_DIR"

# Debian packages the build needs: libclang for the bindgen run of RocksDB's
# bindings (librocksdb-sys).
TQX_APT_PACKAGES=(libclang-dev)
# ... and what the tests need besides: the benchmark's peers, which the bench
# crate's smoke tests start as bench/run does (docs/bench-harness.md).
# prometheus: its `promtool check metrics` validates `/metrics` (src/tests/metrics.rs).
# chromium: the dashboard's test drives it headless (src/tests/ui.rs).
TQX_TEST_APT_PACKAGES=(redis-server beanstalkd rabbitmq-server nats-server prometheus chromium)

ensure_build_deps() {
    ensure_apt_packages "${TQX_APT_PACKAGES[@]}"
}

ensure_test_deps() {
    ensure_apt_packages "${TQX_APT_PACKAGES[@]}" "${TQX_TEST_APT_PACKAGES[@]}"
    ensure_python_test_deps
}

# schemathesis (PyPI) checks the HTTP API against docs/openapi.yaml
# (src/tests/openapi.rs), pinned so that a run's cases and checks do not change
# under us, in a virtualenv beside the build cache (where the test looks for it,
# or in $TQX_VENV): nothing is installed into the system's Python.
TQX_SCHEMATHESIS_VERSION=4.32.5
export TQX_VENV="${TQX_VENV:-$HOME/.cache/taskqueuex/venv}"

ensure_python_test_deps() {
    if [ "$("$TQX_VENV/bin/st" --version 2>/dev/null)" != "st, version $TQX_SCHEMATHESIS_VERSION" ]; then
        echo "tools: installing schemathesis $TQX_SCHEMATHESIS_VERSION into $TQX_VENV" >&2
        python3 -m venv "$TQX_VENV" 2>/dev/null || { ensure_apt_packages python3-venv && python3 -m venv "$TQX_VENV"; }
        "$TQX_VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$TQX_SCHEMATHESIS_VERSION"
    fi
}

ensure_apt_packages() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "tools: installing ${missing[*]}" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}
