#!/usr/bin/env bash
# Every test, on both backends: the whole workspace on the embedded store, then the integration
# suite again on PostgreSQL (each test creates and drops its own database on the server at
# MAMORI_TEST_PG, default postgres://postgres@127.0.0.1:5432/postgres, trust auth).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked
MAMORI_TEST_BACKEND=postgres cargo test --locked --test it
# The benchmark suite still runs and still produces every figure (issue #9): tiny sizes, the debug
# build, nothing written, no timed assertion — the figures themselves are not checked.
scripts/bench-suite.sh --smoke
