#!/usr/bin/env bash
# Instructions the server spends per request, counted by callgrind: the same
# figure for the same binary whatever else the machine is doing, so two
# builds can be compared on a noisy machine where timings cannot.
#
#   crates/kami-bench/scripts/callgrind-request.sh BINARY [PATH] [REQUESTS]
#
# Starts BINARY (`kami`) under `valgrind --tool=callgrind` on a fresh SQLite
# shop, warms it up with 200 requests of PATH (default /healthz), zeroes the
# counters, sends REQUESTS (default 2000) more over one keep-alive connection
# and prints the instructions counted in between, per request. Background
# work (the expiry sweep, the gate's re-sync) falls into the same window.
# KEEP=FILE keeps the profile (callgrind_annotate FILE).
set -euo pipefail
bin=$(realpath "$1")
path=${2:-/healthz}
n=${3:-2000}
port=18190
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT

export KAMI_DATA_DIR=$dir/data KAMI_BIND=127.0.0.1:$port KAMI_RATE_LIMITS=off
mkdir -p "$dir/data"
valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$bin" serve >"$dir/serve.log" 2>&1 &
pid=$!
for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.5
done
urls() { for _ in $(seq "$1"); do printf 'http://127.0.0.1:%s%s ' "$port" "$path"; done; }
# shellcheck disable=SC2046
curl -s $(urls 200) >/dev/null
callgrind_control -z "$pid" >/dev/null 2>&1
# shellcheck disable=SC2046
curl -s $(urls "$n") >/dev/null
callgrind_control -d "$pid" >/dev/null 2>&1
[ -n "${KEEP:-}" ] && cp "$dir"/cg.out.1 "$KEEP"
total=$(sed -n 's/^totals: //p' "$dir"/cg.out.1 | head -1)
echo "$path: $total instructions for $n requests, $((total / n)) per request ($(basename "$bin"))"
