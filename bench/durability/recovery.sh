#!/usr/bin/env bash
# Recovery time per GiB of write-ahead log: fill the log (no checkpoint, so
# recovery must replay all of it) with batch enqueues of ~1 KiB tasks until it
# holds TARGET_MIB, kill -9 the server, restart it, and read its `recovered` line.
#   bench/durability/recovery.sh [TARGET_MIB]   (default 1024)
set -euo pipefail
cd "$(dirname "$0")/../.."
. tools/env.sh
target_mib="${1:-1024}"
work="$(mktemp -d)"
pid=""
trap 'kill -9 "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cargo build --release --quiet --bin tqx
tqx="$CARGO_TARGET_DIR/release/tqx"
start() {
    "$tqx" serve --http 127.0.0.1:0 --binary 127.0.0.1:0 --no-pin --data "$work/data" --checkpoint-interval-ms 86400000 \
        --memory-limit 16GiB >"$work/out" 2>>"$work/err" &
    pid=$!
    local started; started=$(date +%s%N)
    for _ in $(seq 100); do addr="$(sed -n 's/^listening http=//p' "$work/out")"; [ -n "$addr" ] && break; sleep 0.05; done
    until curl -sf "http://$addr/healthz" >/dev/null; do sleep 0.01; done
    echo $(( ($(date +%s%N) - started) / 1000000 ))
}
start >/dev/null
while [ "$(du -sm "$work/data/wal" | cut -f1)" -lt "$target_mib" ]; do
    wrk -t1 -c16 -d5s -s bench/durability/batch1k.lua "http://$addr" >/dev/null
done
wal_mib="$(du -sm "$work/data/wal" | cut -f1)"
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
: >"$work/out"
ready_ms="$(start)"
line="$(grep 'recovered' "$work/err" | tail -1)"
echo "wal on disk: ${wal_mib} MiB (preallocated segments); restart to /healthz 200: ${ready_ms} ms"
echo "$line"
echo "$line" | awk -v ready="$ready_ms" '{
    for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    gib = v["bytes"] / 1073741824
    printf "replayed %d records, %.2f GiB of records, %d tasks in %d ms: %.0f ms per GiB (%.0f ms per GiB to /healthz 200)\n",
        v["records"], gib, v["tasks"], v["elapsed_ms"], v["elapsed_ms"] / gib, ready / gib }'
