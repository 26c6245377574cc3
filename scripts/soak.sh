#!/usr/bin/env bash
# Soak test: minutes of steady keyed load (new keys, duplicates, mismatches, clients that reset
# mid-request, unkeyed requests) against an in-process server, in a release build. Checks that
# resident memory stays flat after the warm-up, that no key is left in flight, and that every
# answer is an expected one. Not part of CI's default run (the test is #[ignore]d).
#
#   scripts/soak.sh [minutes]            # 3 minutes by default, memory store
#   SOAK_STORE=redis scripts/soak.sh 5   # the Redis server at 127.0.0.1:6379
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=${1:-3}
if ! [[ $minutes =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [minutes]   (a whole number of minutes, at least 1)" >&2
    exit 2
fi
SOAK_SECS=$((minutes * 60)) exec cargo test --release --test soak -- --ignored --nocapture
