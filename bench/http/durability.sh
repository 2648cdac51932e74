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

cargo build --release --quiet --bin tqx
start() { # name, durability
    "$CARGO_TARGET_DIR/release/tqx" serve --http 127.0.0.1:0 --binary 127.0.0.1:0 --no-pin --data "$work/$1" --durability "$2" \
        >"$work/$1.out" 2>"$work/$1.err" &
    pids+=($!)
    for _ in $(seq 100); do
        addr="$(sed -n 's/^listening http=//p' "$work/$1.out")"
        [ -n "$addr" ] && curl -sf "http://$addr/healthz" >/dev/null && break
        sleep 0.1
    done
    echo "$addr"
}
sync_addr="$(start sync sync)"
memory_addr="$(start memory memory)"

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
