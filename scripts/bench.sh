#!/usr/bin/env bash
# Load benchmark of the whole stack: /healthz (baseline), authorised FHIR read (P1), durable
# create of an Observation (P2, with the store's fsyncs per create read from /healthz) and
# client-credentials token issuance (durable token + audit entry),
# measured with wrk from a separate process on loopback, in one run, so ratios are comparable on a
# shared, noisy machine. Writes the table into BENCHMARKS.md between the BENCH markers.
#
# Usage: scripts/bench.sh [DURATION_SECONDS] [CONNECTIONS]
# BENCH_BIN=path/to/mamori: load that binary instead of building this tree, and print the table
# without rewriting BENCHMARKS.md (for A/B runs of two builds in one session). BENCH_NO_WRITE=1:
# do not rewrite BENCHMARKS.md. BENCH_FIGURES=FILE: append the P1/P2 figures to FILE as
# `FIGURE key value` lines (scripts/bench-suite.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
CONNS=${2:-16}
command -v wrk >/dev/null || { echo "installing wrk (Debian package)"; apt-get install -y -qq wrk >/dev/null; }
if [ -n "${BENCH_BIN:-}" ]; then BIN=$BENCH_BIN; else cargo build --release --quiet; BIN=${CARGO_TARGET_DIR:-target}/release/mamori; fi
DATA=$(mktemp -d)
PORT=${BENCH_PORT:-18180}
trap '{ kill $SERVER && wait $SERVER; } 2>/dev/null || true; rm -rf "$DATA"' EXIT

SECRET=$($BIN client add bench --scope "system/*.cruds" --token-lifetime 1h --data-dir "$DATA" 2>/dev/null | sed -n 's/^client_secret=//p')
MAMORI_LOG=warn $BIN serve --data-dir "$DATA" --listen 127.0.0.1:$PORT >/dev/null 2>&1 &
SERVER=$!
for _ in $(seq 50); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
TOKEN=$(curl -sf -u "bench:$SECRET" -d grant_type=client_credentials http://127.0.0.1:$PORT/oauth/token | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
export TOKEN
PATIENT='{"resourceType":"Patient","identifier":[{"system":"urn:oid:1.2.392.100495.20.3.51.11234567890","value":"00012345"}],"name":[{"family":"山田","given":["太郎"]}],"gender":"male","birthDate":"1970-01-01"}'
ID=$(curl -sf -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/fhir+json' -d "$PATIENT" http://127.0.0.1:$PORT/fhir/Patient | sed 's/.*"id":"\([^"]*\)".*/\1/')

OBS='{"resourceType":"Observation","status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}],"text":"心拍数"},"subject":{"reference":"Patient/'"$ID"'"},"effectiveDateTime":"2026-11-21T09:00:00+09:00","valueQuantity":{"value":72,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"}}'
LUA=$(mktemp --suffix .lua)
cat > "$LUA" <<LUAEOF
wrk.method = "POST"
wrk.body = '$OBS'
wrk.headers["Content-Type"] = "application/fhir+json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
LUAEOF
TLUA=$(mktemp --suffix .lua)
cat > "$TLUA" <<LUAEOF
wrk.method = "POST"
wrk.body = "grant_type=client_credentials&scope=system%2FPatient.rs"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $(printf 'bench:%s' "$SECRET" | base64 -w0)"
LUAEOF

. scripts/bench-lib.sh
run() { wrk_run "$1" "$CONNS" "${@:2}"; } # name, then wrk args
fsyncs() { curl -sf http://127.0.0.1:$PORT/healthz | sed 's/.*"fsyncs":\([0-9]*\).*/\1/'; }
# wrk's latency (850.00us, 4.27ms, 1.02s) in ms.

H=$(run healthz http://127.0.0.1:$PORT/healthz)
R=$(run read -H "Authorization: Bearer $TOKEN" http://127.0.0.1:$PORT/fhir/Patient/$ID)
F0=$(fsyncs)
C=$(run create -s "$LUA" http://127.0.0.1:$PORT/fhir/Observation)
F1=$(fsyncs)
T=$(run token -s "$TLUA" http://127.0.0.1:$PORT/oauth/token)
FPC=$(awk -v a="$F0" -v b="$F1" -v n="$(echo "$C" | cut -d'|' -f6)" 'BEGIN { printf "%.3f", (b - a) / (n > 0 ? n : 1) }')
rm -f "$LUA" "$TLUA"

HR=$(echo "$H" | cut -d'|' -f2); RR=$(echo "$R" | cut -d'|' -f2); CR=$(echo "$C" | cut -d'|' -f2); TR=$(echo "$T" | cut -d'|' -f2)
TABLE=$(cat <<TEOF
Run on $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr);
\`scripts/bench.sh $DUR $CONNS\` (wrk -t2 -c$CONNS -d${DUR}s, server and load generator share the machine).

| endpoint | requests/s | p50 | p99 | non-2xx | ratio to /healthz |
|---|---|---|---|---|---|
| \`GET /healthz\` (baseline) | $(echo "$H" | cut -d'|' -f2) | $(echo "$H" | cut -d'|' -f3) | $(echo "$H" | cut -d'|' -f4) | $(echo "$H" | cut -d'|' -f5) | 1.000 |
| \`GET /fhir/Patient/{id}\` (bearer token) | $RR | $(echo "$R" | cut -d'|' -f3) | $(echo "$R" | cut -d'|' -f4) | $(echo "$R" | cut -d'|' -f5) | $(ratio "$RR" "$HR") |
| \`POST /fhir/Observation\` (durable create + Provenance + audit entry; $FPC fsyncs per create) | $CR | $(echo "$C" | cut -d'|' -f3) | $(echo "$C" | cut -d'|' -f4) | $(echo "$C" | cut -d'|' -f5) | $(ratio "$CR" "$HR") |
| \`POST /oauth/token\` (client credentials, durable token + audit entry) | $TR | $(echo "$T" | cut -d'|' -f3) | $(echo "$T" | cut -d'|' -f4) | $(echo "$T" | cut -d'|' -f5) | $(ratio "$TR" "$HR") |
TEOF
)
echo "$TABLE"
if [ -n "${BENCH_FIGURES:-}" ]; then
  {
    echo "FIGURE P1.read_ratio $(ratio "$RR" "$HR")"
    echo "FIGURE P1.read_p99_ms $(ms "$(echo "$R" | cut -d'|' -f4)")"
    echo "FIGURE P2.creates_per_s $CR"
    echo "FIGURE P2.fsyncs_per_create $FPC"
  } >> "$BENCH_FIGURES"
fi
if [ -z "${BENCH_BIN:-}" ] && [ -z "${BENCH_NO_WRITE:-}" ] && [ -f BENCHMARKS.md ] && grep -q '<!-- BENCH:BEGIN -->' BENCHMARKS.md; then
  python3 - "$TABLE" <<'PY'
import sys, re
t = open("BENCHMARKS.md").read()
new = "<!-- BENCH:BEGIN -->\n" + sys.argv[1] + "\n<!-- BENCH:END -->"
t = re.sub(r"<!-- BENCH:BEGIN -->.*?<!-- BENCH:END -->", lambda m: new, t, flags=re.S)
open("BENCHMARKS.md", "w").write(t)
PY
fi
