#!/usr/bin/env bash
# First executions on the PostgreSQL store against the same two statements in pgbench.
#
#   pgbench, store statements   scripts/pgbench-first-execution.sql (claim + complete, nobody
#                               waits, so no NOTIFY): the ceiling for the store on this server
#   PostgresStore               the same first executions through the store
#                               (tests/managed_stores.rs, postgres_first_execution_throughput)
#   pgbench, always NOTIFY      scripts/pgbench-first-execution-always-notify.sql: the statements
#                               as they were when every completion sent NOTIFY
#
# Each round runs the three back to back with the same concurrency; the ratios compare numbers
# of the same round. BENCH_CLIENTS (16), BENCH_SECONDS (10), BENCH_ROUNDS (2), POSTGRES_URL.
set -euo pipefail
cd "$(dirname "$0")/.."

URL=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
CLIENTS=${BENCH_CLIENTS:-16}
DURATION=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-2}
export POSTGRES_URL=$URL BENCH_CLIENTS=$CLIENTS BENCH_SECONDS=$DURATION

psql "$URL" -q -f idempotent-runtime/migrations/0001_idempotency_records.sql \
    -f idempotent-runtime/migrations/0002_watched.sql
cargo test --all-features --test managed_stores --no-run 2>/dev/null

pgbench_tps() { # pgbench_tps <script>
    pgbench -n -M prepared -c "$CLIENTS" -j 2 -T "$DURATION" -f "$1" "$URL" 2>/dev/null |
        sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p'
}
store_rate() {
    cargo test --all-features --test managed_stores postgres_first_execution_throughput -- \
        --ignored --nocapture 2>/dev/null | sed -n 's/^store_first_executions_per_second=//p'
}

echo "clients=$CLIENTS seconds=$DURATION (first executions per second)"
for round in $(seq 1 "$ROUNDS"); do
    ceiling=$(pgbench_tps scripts/pgbench-first-execution.sql)
    store=$(store_rate)
    always=$(pgbench_tps scripts/pgbench-first-execution-always-notify.sql)
    awk -v r="$round" -v c="$ceiling" -v s="$store" -v a="$always" 'BEGIN {
        printf "round %d: pgbench %.0f, PostgresStore %.0f (%.2fx of pgbench), pgbench always-NOTIFY %.0f (%.2fx)\n",
               r, c, s, s / c, a, a / c }'
done
psql "$URL" -q -c "DELETE FROM idempotency_records WHERE id LIKE 'bench%'"
