#!/usr/bin/env bash
# The whole benchmark suite of issue #9 in one command: every figure P1–P7, each beside a baseline
# measured in the same run, written as one table into BENCHMARKS.md (between the SUITE markers)
# with the machine, the date and the commands; the detailed tables of each part are rewritten by
# the part itself (bench.sh, bench-search.sh) or printed (the cargo benches).
#
#   P1  scripts/bench.sh              authorised + audited GET /fhir/Patient/{id} ÷ GET /healthz
#   P2  scripts/bench.sh              durable, audited POST /fhir/Observation, fsyncs per request
#   P3  scripts/bench-search.sh N     Observation?patient=X&code=Y and Patient?name=… p99
#   P4  scripts/bench-search.sh N     mamori import of N resources (NDJSON), resources/s
#   P7  scripts/bench-search.sh N     server peak RSS under the search load
#   P5  cargo bench --bench audit     append, verify, inclusion proof (MAMORI_BENCH_N entries)
#   P6  cargo bench --bench authz     decision p99 with 1,000 policies
#
# Usage: scripts/bench-suite.sh [N_SEARCH=1000000] [AUDIT_N=10000000]
#        scripts/bench-suite.sh --smoke     (CI: tiny sizes, 1 s loads, the debug build, nothing
#                                            written; fails only when a part stops producing its
#                                            figures — never on a figure's value)
# The full run takes 10–25 minutes on 2 cores (depending on the VM) and needs ~13 GB free under
# target/ and /tmp. Do not delete large files just before it: the freeing stalls the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=
if [ "${1:-}" = --smoke ]; then SMOKE=1; shift; fi
FIG=$(mktemp)
trap 'rm -f "$FIG"' EXIT
export BENCH_FIGURES=$FIG

if [ -n "$SMOKE" ]; then
  N=2000 AUDIT_N=20000 DUR=1
  cargo build --quiet --locked
  T=${CARGO_TARGET_DIR:-target}; case $T in /*) ;; *) T=$PWD/$T ;; esac
  export BENCH_BIN=$T/debug/mamori BENCH_NO_WRITE=1 AUTHZ_BENCH_N=2000
  PROFILE=(--profile dev)
else
  N=${1:-1000000} AUDIT_N=${2:-10000000} DUR=10
  for v in "$N" "$AUDIT_N"; do
    [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "bench-suite: sizes are positive whole numbers, got \`$v\`; usage: scripts/bench-suite.sh [N_SEARCH] [AUDIT_N] | --smoke" >&2; exit 2; }
  done
  cargo build --release --quiet --locked
  PROFILE=()
fi
START=$(date -u +%Y-%m-%dT%H:%MZ)

echo "== P1, P2: scripts/bench.sh $DUR 16"
scripts/bench.sh "$DUR" 16
echo "== P3, P4, P7: scripts/bench-search.sh $N $DUR 8"
scripts/bench-search.sh "$N" "$DUR" 8
echo "== P5: MAMORI_BENCH_N=$AUDIT_N cargo bench --bench audit"
# The cargo benches print their FIGURE lines; keep them.
MAMORI_BENCH_N=$AUDIT_N cargo bench --quiet --locked "${PROFILE[@]}" --bench audit | tee -a "$FIG"
echo "== P6: cargo bench --bench authz"
cargo bench --quiet --locked "${PROFILE[@]}" --bench authz | tee -a "$FIG"

fig() { awk -v k="$1" '$1 == "FIGURE" && $2 == k { v = $3 } END { print v }' "$FIG"; }
# key, goal test (awk expression on v), label, goal text, unit
ROWS=(
  "P1.read_ratio|v >= 0.30|P1 audited read ÷ /healthz (bench.sh, 16 connections)|≥ 0.30|"
  "P1.read_p99_ms|v <= 5|P1 audited read p99|≤ 5 ms| ms"
  "P2.creates_per_s|v >= 2000|P2 durable audited Observation creates (16 connections)|≥ 2,000/s|/s"
  "P2.fsyncs_per_create|-|P2 state fsyncs per create (group commit)|stated|"
  "P3.obs_p99_ms|v <= 20|P3 Observation?patient=X&code=Y p99 at @N (2 connections)|≤ 20 ms| ms"
  "P3.name_p99_ms|v <= 20|P3 Patient?name=… p99 at @N (2 connections)|≤ 20 ms| ms"
  "P3.obs_p99_ms_loaded|v <= 20|P3 Observation?patient=X&code=Y p99 at @N, saturated (8 connections)|≤ 20 ms| ms"
  "P3.name_p99_ms_loaded|v <= 20|P3 Patient?name=… p99 at @N, saturated (8 connections)|≤ 20 ms| ms"
  "P3.exact_p99_ms|v <= 20|P3 Patient?family:exact=… p99 at @N (2 connections)|≤ 20 ms| ms"
  "P3.contains_p99_ms|v <= 20|P3 Patient?name:contains=… (3 characters) p99 at @N (2 connections)|≤ 20 ms| ms"
  "P3.exact_p99_ms_loaded|v <= 20|P3 Patient?family:exact=… p99 at @N, saturated (8 connections)|≤ 20 ms| ms"
  "P3.contains_p99_ms_loaded|v <= 20|P3 Patient?name:contains=… p99 at @N, saturated (8 connections)|≤ 20 ms| ms"
  "P3.last_updated_p99_ms|v <= 20|P3 Observation?_lastUpdated=… p99 at @N (2 connections)|≤ 20 ms| ms"
  "P3.last_updated_p99_ms_loaded|v <= 20|P3 Observation?_lastUpdated=… p99 at @N, saturated (8 connections)|≤ 20 ms| ms"
  "P3.ranges_p99_ms|v <= 20|P3 Observation?date=… / value-quantity=… p99 at @N (2 connections)|≤ 20 ms| ms"
  "P3.ranges_p99_ms_loaded|v <= 20|P3 Observation?date=… / value-quantity=… p99 at @N, saturated (8 connections)|≤ 20 ms| ms"
  "P3.chain_p99_ms|v <= 20|P3 Observation?subject:Patient.name=… (chain) p99 at @N (2 connections)|≤ 20 ms| ms"
  "P3.chain_p99_ms_loaded|v <= 20|P3 Observation?subject:Patient.name=… p99 at @N, saturated (8 connections)|≤ 20 ms| ms"
  "P4.import_per_s|v >= 5000|P4 NDJSON import of @N resources|≥ 5,000/s|/s"
  "P5.append_per_s|v >= 50000|P5 audit append, batches of 1000|≥ 50,000/s|/s"
  "P5.verify_s_per_m|v <= 10|P5 offline verify, per 1M entries|≤ 10 s| s"
  "P5.proof_p99_us|v <= 1000|P5 inclusion proof p99 at @AN entries|≤ 1 ms| µs"
  "P6.decide_p99_us|v <= 50|P6 decision p99, 1,000 policies|≤ 50 µs| µs"
  "P7.rss_mb|v <= 300|P7 server peak RSS at @N under the search load|≤ 300 MB| MB"
)
MISSING=0
TABLE="| figure | measured | goal | met |
|---|---|---|---|"
for row in "${ROWS[@]}"; do
  IFS='|' read -r key test label goal unit <<<"$row"
  v=$(fig "$key")
  if [ -z "$v" ] || ! awk -v v="$v" 'BEGIN { exit !(v ~ /^[0-9.]+$/) }'; then
    echo "bench-suite: no figure for $key" >&2
    MISSING=1
    TABLE+=$'\n'"| $label | (missing) | $goal | no |"
    continue
  fi
  if [ "$test" = - ]; then met="—"; else met=$(awk -v v="$v" "BEGIN { print ($test) ? \"yes\" : \"**no**\" }"); fi
  TABLE+=$'\n'"| $label | $v$unit | $goal | $met |"
done
TABLE=${TABLE//@AN/$AUDIT_N}
TABLE=${TABLE//@N/$N}
HEAD="Run started $START, $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr);
\`scripts/bench-suite.sh $N $AUDIT_N\` (the parts below, in this order, on one machine shared by server, load generator and database).
Ratios and baselines of each part are in its own table."
echo
echo "$HEAD"
echo
echo "$TABLE"
if [ -n "$SMOKE" ]; then
  [ "$MISSING" = 0 ] || exit 1
  echo "bench-suite --smoke: every part ran and produced its figures"
  exit 0
fi
python3 - "$HEAD"$'\n\n'"$TABLE" <<'PY'
import sys, re
t = open("BENCHMARKS.md").read()
new = "<!-- SUITE:BEGIN -->\n" + sys.argv[1] + "\n<!-- SUITE:END -->"
t = re.sub(r"<!-- SUITE:BEGIN -->.*?<!-- SUITE:END -->", lambda m: new, t, flags=re.S)
open("BENCHMARKS.md", "w").write(t)
PY
[ "$MISSING" = 0 ]
