#!/usr/bin/env bash
# PostgreSQL's WAL per order in a drop and per paid order in a storm, and how
# many of the orders' and codes' updates were HOT: figures that do not depend
# on the clock, so two builds can be compared on a machine too noisy for
# timings (docs/PERFORMANCE.md, stop 25).
#
#   crates/kami-bench/scripts/wal-per-phase.sh BINARY [CODES]
#
# Runs `kami-bench flash-sale --kami BINARY --backend postgres --codes CODES
# --read-seconds 1 --sold-out-seconds 1 --connections 256` (CODES default
# 100000) against the PostgreSQL at 127.0.0.1:5432 and reads
# pg_current_wal_lsn() as the bench announces each phase. Run nothing else
# against that PostgreSQL meanwhile: the WAL is the whole cluster's.
set -euo pipefail
BINARY=${1:?usage: wal-per-phase.sh BINARY [CODES]}
CODES=${2:-100000}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
BENCH="$ROOT/target/release/kami-bench"
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
psql_() { psql -h 127.0.0.1 -U postgres -Atc "$1" "${@:2}"; }
lsn() { psql_ "SELECT pg_current_wal_lsn()"; }
await() {
    for _ in $(seq 1 6000); do
        grep -q "$1" "$LOG" && return
        sleep 0.1
    done
    echo "the bench never printed '$1'" >&2
    exit 1
}
"$BENCH" flash-sale --kami "$BINARY" --backend postgres --codes "$CODES" --read-seconds 1 \
    --sold-out-seconds 1 --connections 256 >"$LOG" 2>&1 &
BENCH_PID=$!
await "the drop"
drop=$(lsn)
await "sold-out traffic"
sold_out=$(lsn)
await "notification storm"
storm=$(lsn)
await "ceiling again"
done_=$(lsn)
db=$(psql_ "SELECT datname FROM pg_database WHERE datname LIKE 'kami_bench%' LIMIT 1")
psql_ "SELECT relname || ': ' || n_tup_upd || ' updates, ' || n_tup_hot_upd || ' HOT' \
       FROM pg_stat_user_tables WHERE relname IN ('orders', 'cards') ORDER BY relname" -d "$db"
psql_ "SELECT 'WAL per order in the drop: ' || round(pg_wal_lsn_diff('$sold_out', '$drop') / $CODES) \
       || ' B; per paid order in the storm: ' || round(pg_wal_lsn_diff('$done_', '$storm') / $CODES) || ' B'"
wait "$BENCH_PID"
grep -E "^  (orders while|notification|verification)" "$LOG"
