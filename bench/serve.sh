# Sourced by the shell benchmarks (bench/http/*.sh, bench/durability/recovery.sh):
# their one way to start `tqx serve`, as src/tests/kit is the Rust tests' and
# harness's. Needs curl.
#
# tqx_start DIR ARGS... starts `$TQX serve --http 127.0.0.1:0 --binary 127.0.0.1:0 ARGS`
# (TQX defaults to the release build) in the background, its stdout in
# DIR/tqx.out and its stderr appended to DIR/tqx.err; waits (up to 60 s) for
# its `listening` lines, then for `GET /healthz` to answer 200 (recovery
# done). Sets tqx_pid, tqx_http, tqx_binary (IP:PORT) and tqx_ready_ms (from
# spawn to ready). Returns 1, saying why on stderr, if the server exits or is
# not ready in time.
tqx_start() {
    local dir="$1"
    shift
    mkdir -p "$dir"
    local started deadline
    started=$(date +%s%N)
    deadline=$(($(date +%s) + 60))
    "${TQX:-$CARGO_TARGET_DIR/release/tqx}" serve --http 127.0.0.1:0 --binary 127.0.0.1:0 "$@" \
        >"$dir/tqx.out" 2>>"$dir/tqx.err" &
    tqx_pid=$!
    tqx_http=""
    tqx_binary=""
    until [ -n "$tqx_http" ] && [ -n "$tqx_binary" ] && curl -sf "http://$tqx_http/healthz" >/dev/null; do
        if ! kill -0 "$tqx_pid" 2>/dev/null; then
            echo "tqx serve exited while starting: $(tail -5 "$dir/tqx.err")" >&2
            return 1
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "tqx serve not ready after 60 s: $(tail -5 "$dir/tqx.err")" >&2
            return 1
        fi
        tqx_http="$(sed -n 's/^listening http=//p' "$dir/tqx.out")"
        tqx_binary="$(sed -n 's/^listening binary=//p' "$dir/tqx.out")"
        sleep 0.01
    done
    tqx_ready_ms=$((($(date +%s%N) - started) / 1000000))
}
