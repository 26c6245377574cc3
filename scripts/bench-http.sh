#!/usr/bin/env bash
# HTTP benchmark: one handler served bare and with #[idempotent], loaded by wrk in four
# variants within the same run, then a table of throughput, latency, server CPU per request
# and the ratio of each variant to the bare handler of the same round.
#
#   scripts/bench-http.sh
#
# Environment (defaults in brackets):
#   DURATION     time per variant per round [8s]       WARMUP   warm-up per variant [2s]
#   ROUNDS       rounds of the four variants [2]       CONNECTIONS  wrk connections [32]
#   BODY_BYTES   request (and response) body [1024]    WORKERS  server workers [1]
#   PORT         bare server port; annotated is PORT+1 [8088]   CAPACITY_MIB store size [64]
#   STORE        memory, or null: a store that keeps nothing, for what the engine alone costs
#                (replays then execute again) [memory]
#   SERVER       a bench_server binary to load instead of building this tree's (to compare two
#                builds on the same machine state)
#
# One wrk thread and one server worker: on a two-core machine each gets a core. The server's
# CPU time per request (from /proc) is reported next to throughput: it does not depend on
# whether wrk or the server was the bottleneck.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-8s}
WARMUP=${WARMUP:-2s}
ROUNDS=${ROUNDS:-2}
CONNECTIONS=${CONNECTIONS:-32}
BODY_BYTES=${BODY_BYTES:-1024}
WORKERS=${WORKERS:-1}
PORT=${PORT:-8088}
CAPACITY_MIB=${CAPACITY_MIB:-64}
STORE=${STORE:-memory}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
SCRIPT=scripts/bench-post.lua

if ! command -v wrk >/dev/null; then
    echo "wrk not found: installing it from Debian" >&2
    apt-get update -qq
    apt-get install -y -qq wrk >/dev/null
fi

if [[ -z ${SERVER:-} ]]; then
    cargo build --release --example bench_server
    SERVER=$TARGET_DIR/release/examples/bench_server
fi

store_flag=()
[[ $STORE == memory ]] || store_flag=(--store "$STORE")
log=$(mktemp)
"$SERVER" --bare "127.0.0.1:$PORT" --annotated "127.0.0.1:$((PORT + 1))" --workers "$WORKERS" \
    --capacity-mib "$CAPACITY_MIB" --max-response-bytes $((2 * BODY_BYTES + 4096)) "${store_flag[@]}" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -f "$log"' EXIT
listening() { [[ $(grep -c '^listening on' "$log") -ge 2 ]]; }
for _ in $(seq 100); do
    listening && break
    kill -0 "$server" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
done
listening || { echo "the bench server did not start" >&2; exit 1; }

ticks_per_second=$(getconf CLK_TCK)
run_id=$(date +%s%N)

# utime + stime of the server, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$server/stat"; }

# GET /stats over bash's /dev/tcp; prints one counter.
stat() {
    local body
    exec 3<>"/dev/tcp/127.0.0.1/$PORT"
    printf 'GET /stats HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n' >&3
    body=$(tail -n 1 <&3)
    exec 3>&-
    grep -o "\"$1\":[0-9]*" <<<"$body" | cut -d: -f2
}

# load VARIANT DURATION LABEL: one wrk run; sets rps, p99, requests, cpu_us, bad.
load() {
    local url mode out before after
    case $1 in
        bare) url=http://127.0.0.1:$PORT/bare mode=none ;;
        no_key) url=http://127.0.0.1:$((PORT + 1))/annotated mode=none ;;
        unique) url=http://127.0.0.1:$((PORT + 1))/annotated mode=unique ;;
        replay) url=http://127.0.0.1:$((PORT + 1))/annotated mode=same ;;
    esac
    before=$(cpu_ticks)
    out=$(wrk -t1 -c"$CONNECTIONS" -d"$2" --latency -s "$SCRIPT" "$url" -- "$mode" "$BODY_BYTES" "$run_id-$3")
    after=$(cpu_ticks)
    rps=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
    p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
    requests=$(awk '/requests in/ { print $1 }' <<<"$out")
    bad=$(awk '/Non-2xx/ { n += $NF } /Socket errors/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' <<<"$out")
    cpu_us=$(awk -v t=$((after - before)) -v hz="$ticks_per_second" -v n="$requests" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
}

variants=(bare no_key unique replay)
declare -A label=([bare]="bare handler" [no_key]="annotated, no key" [unique]="annotated, unique keys" [replay]="annotated, replays")
declare -A target=([bare]="" [no_key]="0.98" [unique]="0.90" [replay]="0.95")
declare -A result_rps result_p99 result_cpu

echo "warming up (${WARMUP} per variant)" >&2
for variant in "${variants[@]}"; do
    load "$variant" "$WARMUP" "warmup-$variant"
done

for round in $(seq "$ROUNDS"); do
    for variant in "${variants[@]}"; do
        executed_before=$(stat annotated)
        load "$variant" "$DURATION" "$round-$variant"
        executed=$(($(stat annotated) - executed_before))
        if [[ $bad -ne 0 ]]; then
            echo "$variant, round $round: $bad failed requests" >&2
            exit 1
        fi
        case $variant in
            # wrk counts answered requests; up to one per connection was still in flight at the end.
            unique) ((executed >= requests && executed <= requests + CONNECTIONS)) || {
                echo "unique keys: $requests requests but $executed executions" >&2
                exit 1
            } ;;
            replay) [[ $STORE == null || $executed -le 1 ]] || { echo "replays: $executed executions" >&2; exit 1; } ;;
        esac
        result_rps[$variant,$round]=$rps
        result_p99[$variant,$round]=$p99
        result_cpu[$variant,$round]=$cpu_us
        echo "round $round, ${label[$variant]}: $rps req/s, p99 $p99, server $cpu_us µs/request" >&2
    done
done

echo
echo "$(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), wrk -t1 -c$CONNECTIONS, $DURATION per variant per round," \
    "$BODY_BYTES B bodies, $WORKERS server worker(s), $STORE store ($CAPACITY_MIB MiB for memory)"
echo "records held: $(stat records), evicted before their ttl: $(stat evicted_live_records)"
echo
header="| variant | target |"
rule="|---|---|"
for round in $(seq "$ROUNDS"); do
    header+=" req/s #$round | ratio #$round | p99 #$round | server µs/req #$round | CPU ratio #$round |"
    rule+="---|---|---|---|---|"
done
echo "$header"
echo "$rule"
for variant in "${variants[@]}"; do
    line="| ${label[$variant]} | ${target[$variant]:+≥ }${target[$variant]:-—} |"
    for round in $(seq "$ROUNDS"); do
        line+=$(awk -v r="${result_rps[$variant,$round]}" -v b="${result_rps[bare,$round]}" \
            -v c="${result_cpu[$variant,$round]}" -v bc="${result_cpu[bare,$round]}" -v p="${result_p99[$variant,$round]}" \
            'BEGIN { printf " %.0f | %.3f | %s | %.1f | %.3f |", r, r / b, p, c, bc / c }')
    done
    echo "$line"
done
echo
echo "ratio: throughput / bare throughput of the same round; CPU ratio: bare server CPU per request / this variant's"
