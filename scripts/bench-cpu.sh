#!/usr/bin/env bash
# Server CPU time per request: steal time and a noisy neighbour do not move it, where requests/s
# and even the /healthz ratio do (issue #23's A/B, BENCHMARKS.md). Starts `mamori serve` on a
# fresh data directory, then for /healthz, an audited read and a durable create runs wrk for 8 s
# at 16 connections and divides the server's utime + stime (from /proc) by the requests done.
#
# Usage: scripts/bench-cpu.sh [BIN=target/release/mamori] [PORT=18190]
# Prints; writes nothing. Compare two builds by alternating runs.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/mamori}; PORT=${2:-18190}
command -v wrk >/dev/null || { echo "bench-cpu: needs wrk (apt-get install wrk)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "bench-cpu: no binary at $BIN (cargo build --release)" >&2; exit 1; }
TICK=$(getconf CLK_TCK)
DATA=$(mktemp -d)
SECRET=$($BIN client add bench --scope "system/*.cruds" --token-lifetime 1h --data-dir "$DATA" 2>/dev/null | sed -n 's/^client_secret=//p')
MAMORI_LOG=warn $BIN serve --data-dir "$DATA" --listen 127.0.0.1:$PORT >/dev/null 2>&1 &
SERVER=$!
trap '{ kill $SERVER && wait $SERVER; } 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
TOKEN=$(curl -sf -u "bench:$SECRET" -d grant_type=client_credentials http://127.0.0.1:$PORT/oauth/token | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
export TOKEN
PATIENT='{"resourceType":"Patient","name":[{"family":"山田","given":["太郎"]}],"gender":"male","birthDate":"1970-01-01"}'
ID=$(curl -sf -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/fhir+json' -d "$PATIENT" http://127.0.0.1:$PORT/fhir/Patient | sed 's/.*"id":"\([^"]*\)".*/\1/')
OBS='{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"subject":{"reference":"Patient/'"$ID"'"},"valueQuantity":{"value":72,"unit":"/min"}}'
LUA=$(mktemp --suffix .lua)
printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/fhir+json"\nwrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")\n' "'$OBS'" > $LUA
cpu() { awk '{print $14+$15}' /proc/$SERVER/stat; }
measure() { local c0 c1 n; c0=$(cpu); n=$(wrk -t2 -c16 -d8s "$@" 2>/dev/null | awk '/requests in/ {print $1}'); c1=$(cpu); awk -v a=$c0 -v b=$c1 -v n=$n -v t=$TICK 'BEGIN{printf "%d req, %.1f us CPU/req", n, (b-a)*1000000/t/n}'; }
echo "healthz: $(measure http://127.0.0.1:$PORT/healthz)"
echo "read:    $(measure -H "Authorization: Bearer $TOKEN" http://127.0.0.1:$PORT/fhir/Patient/$ID)"
echo "create:  $(measure -s $LUA http://127.0.0.1:$PORT/fhir/Observation)"
rm -f $LUA
