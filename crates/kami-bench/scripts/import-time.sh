#!/usr/bin/env bash
# How long one admin-API import of N codes takes on PostgreSQL and on SQLite,
# each on a fresh shop, with PostgreSQL's time as a multiple of SQLite's (the
# machine is shared and noisy: compare ratios, alternating two builds).
#
#   crates/kami-bench/scripts/import-time.sh BINARY [N]      (default 100000)
#
# Needs PostgreSQL at 127.0.0.1:5432 (trust auth); uses and drops the database
# kami_import_time. Statements of 30 ms or more land in PostgreSQL's log.
set -euo pipefail
bin=$(realpath "$1")
n=${2:-100000}
port=18400
base=http://127.0.0.1:$port
pg=postgres://postgres@127.0.0.1:5432
dir=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"; psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS kami_import_time WITH (FORCE)" 2>/dev/null || true' EXIT
seq 1 "$n" | sed "s/^/IMPORT-$RANDOM-/" >"$dir/codes.txt"
declare -A took
for backend in postgres sqlite; do
    data=$dir/$backend
    mkdir -p "$data"
    if [ "$backend" = postgres ]; then
        psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS kami_import_time WITH (FORCE)" \
            -c "CREATE DATABASE kami_import_time" \
            -c "ALTER DATABASE kami_import_time SET log_min_duration_statement = 30" 2>/dev/null
        export KAMI_DATABASE_URL=$pg/kami_import_time
    else
        unset KAMI_DATABASE_URL
    fi
    KAMI_DATA_DIR=$data KAMI_BIND=127.0.0.1:$port KAMI_RATE_LIMITS=off "$bin" serve >"$data/log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.2; done
    key=$(KAMI_DATA_DIR=$data "$bin" api-key create --name import-time 2>/dev/null | tail -1)
    product=$(curl -sf -H "Authorization: Bearer $key" -H 'content-type: application/json' \
        -d '{"name":"Import time","price":100,"currency":"CNY"}' "$base/api/v1/admin/products" |
        sed 's/.*"id":\([0-9]*\).*/\1/')
    start=$(date +%s.%N)
    answer=$(curl -sf -H "Authorization: Bearer $key" -H 'content-type: text/plain' \
        --data-binary @"$dir/codes.txt" "$base/api/v1/admin/products/$product/cards")
    end=$(date +%s.%N)
    case $answer in
        *"\"imported\":$n,"*) ;;
        *) echo "$backend: the import answered $answer" >&2; exit 1 ;;
    esac
    took[$backend]=$(echo "$end - $start" | bc)
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
done
printf '%s codes: PostgreSQL %.2f s, SQLite %.2f s, PostgreSQL %.2f× SQLite\n' "$n" \
    "${took[postgres]}" "${took[sqlite]}" "$(echo "${took[postgres]} / ${took[sqlite]}" | bc -l)"
