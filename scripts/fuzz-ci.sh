#!/usr/bin/env bash
# Fuzzes key validation, the canonical JSON fingerprint and record decoding for a bounded time
# each (FUZZ_SECONDS, 20 by default). Exits non-zero on the first crash; libFuzzer leaves the
# input in fuzz/artifacts/<target>/ and `cargo fuzz run <target> <file>` replays it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-20}
targets=(key_parse fingerprint_json record_decode)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# cargo fuzz builds with -Zsanitizer=address; the stable toolchain accepts it this way.
export RUSTC_BOOTSTRAP=1

cargo fuzz build
for target in "${targets[@]}"; do
    corpus=fuzz/corpus/$target
    mkdir -p "$corpus"
    inputs=("$corpus")
    if [ -d "fuzz/seeds/$target" ]; then
        inputs+=("fuzz/seeds/$target")
    fi
    echo "fuzz: $target for $seconds s"
    cargo fuzz run "$target" "${inputs[@]}" -- -max_total_time="$seconds" -print_final_stats=1
done
echo "fuzz: ${#targets[@]} targets, no crash"
