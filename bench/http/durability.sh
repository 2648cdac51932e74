#!/usr/bin/env bash
# HTTP enqueue throughput in `sync` mode against `memory` mode, alternated run by
# run in one session (wrk -t1 -c64, the issue's measurement):
#   bench/http/durability.sh [RUNS] [SECONDS]
# Two servers run side by side (1 reactor, 1 worker each, not pinned, so they
# share the 2 cores the same way); only the one being measured gets load.
# Prints one line per run, then the medians and the ratio memory / sync.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tools/env.sh
runs="${1:-5}"
seconds="${2:-10}"
work="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

. bench/serve.sh
cargo build --release --quiet --bin tqx
tqx_start "$work/sync" --no-pin --data "$work/sync/data" --durability sync
pids+=("$tqx_pid")
sync_addr="$tqx_http"
tqx_start "$work/memory" --no-pin --data "$work/memory/data" --durability memory
pids+=("$tqx_pid")
memory_addr="$tqx_http"

measure() { wrk -t1 -c64 -d"${seconds}s" -s bench/http/enqueue.lua "$1" | awk '/Requests\/sec/ {print $2}'; }
s=(); m=()
for i in $(seq "$runs"); do
    s+=("$(measure "http://$sync_addr")")
    m+=("$(measure "http://$memory_addr")")
    echo "run $i: sync ${s[-1]} req/s, memory ${m[-1]} req/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ms="$(median "${s[@]}")"; mm="$(median "${m[@]}")"
echo "median: sync $ms req/s, memory $mm req/s, memory/sync $(awk -v a="$mm" -v b="$ms" 'BEGIN {printf "%.2f", a/b}')"
