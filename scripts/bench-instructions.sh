#!/usr/bin/env bash
# Server instructions per request over real HTTP, per variant, counted by callgrind.
#
#   scripts/bench-instructions.sh
#
# Wall-clock throughput on a shared two-core machine moves by ±10 % between runs; instruction
# counts do not (the same binary, inputs and environment give the same count whatever else the
# machine is doing). The server (`examples/bench_server.rs`) runs under callgrind with
# instrumentation off; for each variant the script switches it on, loads the server with wrk,
# switches it off and dumps the count. Startup, warm-up and the client are never counted.
#
# Environment (defaults in brackets):
#   DURATION     wrk time per variant [6s]         CONNECTIONS  wrk connections [4]
#   BODY_BYTES   request (and response) body [1024] PORT  bare server port; annotated is PORT+1 [8098]
#   CAPACITY_MIB memory store size [4]: small, so the unique-key variant runs with a full,
#                evicting store, as a long-running server does
#   KEEP         a directory to keep each variant's callgrind profile in, for callgrind_annotate
#   SERVER       a bench_server binary to count instead of building this tree's
#   STORE        memory, or null: a store that keeps nothing, for what the engine alone costs
#                (replays then execute again) [memory]
#
# Instructions are not time (a cache miss costs no instruction), so BENCHMARKS.md reports both.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-6s}
CONNECTIONS=${CONNECTIONS:-4}
BODY_BYTES=${BODY_BYTES:-1024}
PORT=${PORT:-8098}
CAPACITY_MIB=${CAPACITY_MIB:-4}
STORE=${STORE:-memory}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
SCRIPT=scripts/bench-post.lua

for tool in wrk valgrind; do
    if ! command -v "$tool" >/dev/null; then
        echo "$tool not found: installing it from Debian" >&2
        apt-get update -qq
        apt-get install -y -qq "$tool" >/dev/null
    fi
done

if [[ -z ${SERVER:-} ]]; then
    cargo build --release --example bench_server
    SERVER=$TARGET_DIR/release/examples/bench_server
fi

store_flag=()
[[ $STORE == memory ]] || store_flag=(--store "$STORE")
work=$(mktemp -d)
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/callgrind.out" \
    "$SERVER" --bare "127.0.0.1:$PORT" --annotated "127.0.0.1:$((PORT + 1))" \
    --workers 1 --capacity-mib "$CAPACITY_MIB" --max-response-bytes $((2 * BODY_BYTES + 4096)) "${store_flag[@]}" >"$work/log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
listening() { [[ $(grep -c '^listening on' "$work/log") -ge 2 ]]; }
for _ in $(seq 600); do
    listening && break
    kill -0 "$server" 2>/dev/null || { cat "$work/log" >&2; exit 1; }
    sleep 0.1
done
listening || { echo "the bench server did not start under callgrind" >&2; exit 1; }

run_id=$(date +%s%N)

url_and_mode() {
    case $1 in
        bare) echo "http://127.0.0.1:$PORT/bare none" ;;
        no_key) echo "http://127.0.0.1:$((PORT + 1))/annotated none" ;;
        unique) echo "http://127.0.0.1:$((PORT + 1))/annotated unique" ;;
        replay) echo "http://127.0.0.1:$((PORT + 1))/annotated same" ;;
    esac
}

# load VARIANT DURATION LABEL: one wrk run; prints the number of answered requests.
load() {
    local url mode out
    read -r url mode < <(url_and_mode "$1")
    out=$(wrk -t1 -c"$CONNECTIONS" -d"$2" -s "$SCRIPT" "$url" -- "$mode" "$BODY_BYTES" "$run_id-$3")
    if grep -q -E 'Non-2xx|Socket errors' <<<"$out"; then
        echo "$1: failed requests: $out" >&2
        exit 1
    fi
    awk '/requests in/ { print $1 }' <<<"$out"
}

# The instructions callgrind counted since the last dump (the newest dump's totals), and those
# spent compressing SHA-256 blocks: "TOTAL SHA".
dump_total() {
    callgrind_control --dump="$1" "$server" >/dev/null
    local newest sha
    for _ in $(seq 50); do
        newest=$(ls -t "$work"/callgrind.out.* 2>/dev/null | head -n 1 || true)
        [[ -n $newest ]] && grep -q '^totals:' "$newest" && break
        sleep 0.1
    done
    sha=$(callgrind_annotate --inclusive=yes "$newest" 2>/dev/null |
        awk '/sha2::sha256::compress256 / && !found { gsub(",", "", $1); print $1; found = 1 }')
    echo "$(awk '/^totals:/ { print $2 }' "$newest") ${sha:-0}"
    if [[ -n ${KEEP:-} ]]; then
        mkdir -p "$KEEP"
        cp "$newest" "$KEEP/$1.callgrind"
    fi
    rm -f "$work"/callgrind.out.*
}

variants=(bare no_key unique replay)
declare -A label=([bare]="bare handler" [no_key]="annotated, no key" [unique]="annotated, unique keys" [replay]="annotated, replays")
declare -A target=([bare]="" [no_key]="0.98" [unique]="0.90" [replay]="0.95")
declare -A per_request without_sha

echo "warming up (the unique-key variant fills the ${CAPACITY_MIB} MiB store)" >&2
for variant in "${variants[@]}"; do
    load "$variant" 3s "warmup-$variant" >/dev/null
done
dump_total warmup >/dev/null

for variant in "${variants[@]}"; do
    callgrind_control --instr=on "$server" >/dev/null
    requests=$(load "$variant" "$DURATION" "$variant")
    sleep 0.5 # answers still in flight when wrk stopped
    callgrind_control --instr=off "$server" >/dev/null
    read -r total sha < <(dump_total "$variant")
    per_request[$variant]=$(awk -v t="$total" -v n="$requests" 'BEGIN { printf "%.0f", t / n }')
    without_sha[$variant]=$(awk -v t="$total" -v s="$sha" -v n="$requests" 'BEGIN { printf "%.0f", (t - s) / n }')
    echo "${label[$variant]}: $requests requests, ${per_request[$variant]} instructions/request" \
        "(${without_sha[$variant]} without SHA-256 blocks)" >&2
done

echo
echo "callgrind, wrk -t1 -c$CONNECTIONS, $DURATION per variant, $BODY_BYTES B bodies, one server worker, $STORE store ($CAPACITY_MIB MiB for memory)"
echo
echo "| variant | target | instructions / request | ratio to bare | without SHA-256 blocks | ratio to bare |"
echo "|---|---|---|---|---|---|"
for variant in "${variants[@]}"; do
    awk -v l="${label[$variant]}" -v t="${target[$variant]}" -v i="${per_request[$variant]}" -v b="${per_request[bare]}" \
        -v w="${without_sha[$variant]}" -v wb="${without_sha[bare]}" \
        'BEGIN { printf "| %s | %s | %d | %.3f | %d | %.3f |\n", l, (t == "" ? "—" : "≥ " t), i, b / i, w, wb / w }'
done
echo
echo "ratio: bare instructions per request / this variant's (1 = as cheap as the bare handler)."
echo "valgrind hides the CPU's SHA extensions, so sha2 runs its software rounds under it (about 3,100"
echo "instructions per 64-byte block); natively the fingerprint of 1 KiB takes about 0.9 µs"
echo "(cargo bench --bench fingerprint). The last two columns leave those blocks out."
