#!/usr/bin/env bash
# HTTP enqueue throughput of `tqx serve`, alternated run by run with a reference
# measured in the same run: nginx answering every POST with a fixed 201 (no
# parsing of the body, no queue): the ceiling for an HTTP server on this machine.
#   bench/http/compare.sh [RUNS] [SECONDS]
# Needs: wrk, nginx-light and curl (apt-get install wrk nginx-light curl). Prints one line
# per run and the medians; the server uses its defaults (1 reactor, 1 worker).
set -euo pipefail
cd "$(dirname "$0")/../.."
. tools/env.sh
runs="${1:-5}"
seconds="${2:-5}"
work="$(mktemp -d)"
tqx_pid=""
trap 'kill "$tqx_pid" 2>/dev/null || true; nginx -c "$work/nginx.conf" -s stop 2>/dev/null || true; rm -rf "$work"' EXIT

. bench/serve.sh
cargo build --release --quiet --bin tqx
tqx_start "$work" --data "$work/data"
tqx_addr="$tqx_http"

cat >"$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:7781; location / { return 201 '{"id":"1","state":"ready"}'; } } }
CONF
nginx -c "$work/nginx.conf"

measure() { wrk -t1 -c64 -d"${seconds}s" -s bench/http/enqueue.lua "$1" | awk '/Requests\/sec/ {print $2}'; }
tqx=(); ref=()
for i in $(seq "$runs"); do
    tqx+=("$(measure "http://$tqx_addr")")
    ref+=("$(measure "http://127.0.0.1:7781")")
    echo "run $i: tqx ${tqx[-1]} req/s, nginx fixed-201 ${ref[-1]} req/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m_tqx="$(median "${tqx[@]}")"; m_ref="$(median "${ref[@]}")"
echo "median: tqx $m_tqx req/s, nginx $m_ref req/s, ratio $(awk -v a="$m_tqx" -v b="$m_ref" 'BEGIN {printf "%.2f", a/b}')"
