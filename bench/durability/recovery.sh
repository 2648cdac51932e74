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
. bench/serve.sh
cargo build --release --quiet --bin tqx
start() {
    tqx_start "$work" --no-pin --data "$work/data" --checkpoint-interval-ms 86400000 --memory-limit 16GiB
    pid="$tqx_pid"
    addr="$tqx_http"
}
start
while [ "$(du -sm "$work/data/wal" | cut -f1)" -lt "$target_mib" ]; do
    wrk -t1 -c16 -d5s -s bench/durability/batch1k.lua "http://$addr" >/dev/null
done
wal_mib="$(du -sm "$work/data/wal" | cut -f1)"
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
start
ready_ms="$tqx_ready_ms"
line="$(grep 'recovered' "$work/tqx.err" | tail -1)"
echo "wal on disk: ${wal_mib} MiB (preallocated segments); restart to /healthz 200: ${ready_ms} ms"
echo "$line"
echo "$line" | awk -v ready="$ready_ms" '{
    for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    gib = v["bytes"] / 1073741824
    printf "replayed %d records, %.2f GiB of records, %d tasks in %d ms: %.0f ms per GiB (%.0f ms per GiB to /healthz 200)\n",
        v["records"], gib, v["tasks"], v["elapsed_ms"], v["elapsed_ms"] / gib, ready / gib }'
