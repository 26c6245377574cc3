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
# Each round runs the three back to back with the same concurrency (pgbench and the store in
# alternating order); the ratios compare numbers of the same round. BENCH_CLIENTS (16), BENCH_SECONDS (10), BENCH_ROUNDS (3), POSTGRES_URL.
# The store runs from a release build of the test (BENCH_PROFILE=dev for a debug build: its
# client CPU then competes with the server's on a small machine).
set -euo pipefail
cd "$(dirname "$0")/.."

URL=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
CLIENTS=${BENCH_CLIENTS:-16}
DURATION=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
PROFILE=${BENCH_PROFILE:-release}
export POSTGRES_URL=$URL BENCH_CLIENTS=$CLIENTS BENCH_SECONDS=$DURATION

psql "$URL" -q -f idempotent-runtime/migrations/0001_idempotency_records.sql \
    -f idempotent-runtime/migrations/0002_watched.sql
cargo test --profile "$PROFILE" --all-features --test managed_stores --no-run 2>/dev/null

pgbench_tps() { # pgbench_tps <script>
    pgbench -n -M prepared -c "$CLIENTS" -j 2 -T "$DURATION" -f "$1" "$URL" 2>/dev/null |
        sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p'
}
store_rate() {
    cargo test --profile "$PROFILE" --all-features --test managed_stores postgres_first_execution_throughput -- \
        --ignored --nocapture 2>/dev/null | sed -n 's/^store_first_executions_per_second=//p'
}

echo "clients=$CLIENTS seconds=$DURATION profile=$PROFILE (first executions per second)"
for round in $(seq 1 "$ROUNDS"); do
    # Alternate which runs first, so neither always meets a warmer or a fuller table.
    if [ $((round % 2)) = 1 ]; then
        ceiling=$(pgbench_tps scripts/pgbench-first-execution.sql)
        store=$(store_rate)
    else
        store=$(store_rate)
        ceiling=$(pgbench_tps scripts/pgbench-first-execution.sql)
    fi
    always=$(pgbench_tps scripts/pgbench-first-execution-always-notify.sql)
    awk -v r="$round" -v c="$ceiling" -v s="$store" -v a="$always" 'BEGIN {
        printf "round %d: pgbench %.0f, PostgresStore %.0f (%.2fx of pgbench), pgbench always-NOTIFY %.0f (%.2fx)\n",
               r, c, s, s / c, a, a / c }'
done
psql "$URL" -q -c "DELETE FROM idempotency_records WHERE id LIKE 'bench%'"
