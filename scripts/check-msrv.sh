#!/usr/bin/env bash
# The minimum supported Rust version each crate states (`rust-version`) must be at least the
# highest `rust-version` declared anywhere in what the libraries build with (normal and build
# dependencies, every feature on). Dev-dependencies are left out: they build the tests, not
# what a user compiles.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --all-features --locked | python3 -c '
import json, sys

meta = json.load(sys.stdin)
packages = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}

def version(text):
    parts = [int(part) for part in (text or "0").split(".")]
    return tuple(parts + [0] * (3 - len(parts)))

def built_with(root):
    seen, stack = set(), [root]
    while stack:
        node = nodes[stack.pop()]
        for dep in node["deps"]:
            kinds = {kind["kind"] for kind in dep["dep_kinds"]}
            if kinds - {"dev"} and dep["pkg"] not in seen:
                seen.add(dep["pkg"])
                stack.append(dep["pkg"])
    return seen

failed = False
for member in meta["workspace_members"]:
    crate = packages[member]
    stated = crate.get("rust_version")
    needed = max(built_with(member), key=lambda id: version(packages[id].get("rust_version")))
    need = packages[needed].get("rust_version") or "0"
    verdict = "ok" if version(stated) >= version(need) else "TOO LOW"
    failed |= verdict != "ok"
    name, by = crate["name"], packages[needed]["name"]
    print(f"{name}: rust-version {stated}; highest among its dependencies {need} ({by}): {verdict}")
sys.exit(1 if failed else 0)
'
