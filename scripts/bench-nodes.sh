#!/usr/bin/env bash
# Reads/s and audited writes/s on the embedded store and on PostgreSQL with one and two nodes,
# measured with wrk from separate processes on loopback in one run; ratios are against the
# embedded node's /healthz measured in the same run. Writes the table into BENCHMARKS.md between
# the NODES markers.
#
# Usage: scripts/bench-nodes.sh [DURATION_SECONDS] [CONNECTIONS]
# MAMORI_BENCH_PG: admin URL of the PostgreSQL server (default postgres://postgres@127.0.0.1:5432/postgres);
# the script creates database mamori_bench_nodes and drops it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
CONNS=${2:-16}
ADMIN=${MAMORI_BENCH_PG:-postgres://postgres@127.0.0.1:5432/postgres}
DBURL="${ADMIN%/*}/mamori_bench_nodes"
command -v wrk >/dev/null || { echo "installing wrk (Debian package)"; apt-get install -y -qq wrk >/dev/null; }
command -v psql >/dev/null || { echo "installing psql (Debian package)"; apt-get install -y -qq postgresql-client >/dev/null; }
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/mamori
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$ADMIN" -qc "DROP DATABASE IF EXISTS mamori_bench_nodes WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

OBS='{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"subject":{"reference":"Patient/p1"},"valueQuantity":{"value":72,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"}}'
PATIENT='{"resourceType":"Patient","name":[{"family":"山田","given":["太郎"]}],"gender":"male","birthDate":"1970-01-01"}'

serve() { # dir port
  MAMORI_LOG=warn $BIN serve --data-dir "$1" --listen 127.0.0.1:$2 >/dev/null 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do curl -sf http://127.0.0.1:$2/healthz >/dev/null && return; sleep 0.1; done
  echo "node on port $2 did not start" >&2; exit 1
}
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
}
token() { # port secret
  curl -sf -u "bench:$2" -d grant_type=client_credentials http://127.0.0.1:$1/oauth/token | sed 's/.*"access_token":"\([^"]*\)".*/\1/'
}
lua() { # token -> file posting an Observation
  local f; f=$(mktemp --suffix .lua -p "$WORK")
  printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/fhir+json"\nwrk.headers["Authorization"] = "Bearer %s"\n' "'$OBS'" "$1" > "$f"
  echo "$f"
}
wrk1() { # conns, then wrk args -> "rps p99"
  local c=$1; shift
  local out; out=$(wrk -t1 -c"$c" -d"${DUR}s" --latency "$@")
  echo "$(echo "$out" | awk '/Requests\/sec/ {print $2}') $(echo "$out" | awk '$1=="99%" {print $2}')"
}
# Runs the same load against each listed port at once (CONNS split between them): "total_rps p99s".
load() { # kind(read|write) port...
  local kind=$1; shift
  local n=$#; local per=$(( CONNS / n )); local outs=()
  local i=0
  for port in "$@"; do
    local tok=${TOKENS[$port]}
    if [ "$kind" = read ]; then
      wrk1 "$per" -H "Authorization: Bearer $tok" "http://127.0.0.1:$port/fhir/Patient/${IDS[$port]}" > "$WORK/out.$i" &
    else
      wrk1 "$per" -s "$(lua "$tok")" "http://127.0.0.1:$port/fhir/Observation" > "$WORK/out.$i" &
    fi
    i=$((i + 1))
  done
  wait
  awk '{ r += $1; p = p (p == "" ? "" : " / ") $2 } END { printf "%.0f|%s\n", r, p }' "$WORK"/out.*
  rm -f "$WORK"/out.*
}
declare -A TOKENS IDS
setup_node() { # dir port secret
  TOKENS[$2]=$(token "$2" "$3")
  IDS[$2]=$(curl -sf -X POST -H "Authorization: Bearer ${TOKENS[$2]}" -H 'Content-Type: application/fhir+json' -d "$PATIENT" http://127.0.0.1:$2/fhir/Patient | sed 's/.*"id":"\([^"]*\)".*/\1/')
}

# 1. Embedded store, one node.
E=$WORK/embedded
SECRET=$($BIN client add bench --scope "system/*.cruds" --token-lifetime 1h --data-dir "$E" 2>/dev/null | sed -n 's/^client_secret=//p')
serve "$E" 18281
setup_node "$E" 18281 "$SECRET"
H=$(wrk1 "$CONNS" http://127.0.0.1:18281/healthz)
ER=$(load read 18281); EW=$(load write 18281)
stop_all

# 2. PostgreSQL, one node, then two nodes on the same database.
psql "$ADMIN" -qc "DROP DATABASE IF EXISTS mamori_bench_nodes WITH (FORCE)" >/dev/null
psql "$ADMIN" -qc "CREATE DATABASE mamori_bench_nodes TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'" >/dev/null
A=$WORK/a; B=$WORK/b
$BIN init --data-dir "$A" --database "$DBURL" >/dev/null
mkdir -p "$B"; cp -r "$A/keys" "$B/keys"
SECRET=$($BIN client add bench --scope "system/*.cruds" --token-lifetime 1h --data-dir "$A" --database "$DBURL" 2>/dev/null | sed -n 's/^client_secret=//p')
MAMORI_DATABASE=$DBURL serve "$A" 18282
setup_node "$A" 18282 "$SECRET"
PR1=$(load read 18282); PW1=$(load write 18282)
MAMORI_DATABASE=$DBURL serve "$B" 18283
setup_node "$B" 18283 "$SECRET"
PR2=$(load read 18282 18283); PW2=$(load write 18282 18283)
AUDIT=$(psql "$DBURL" -Atc "SELECT COUNT(*) || ' entries, indexes 1..' || MAX(idx) || ', gaps: ' || (MAX(idx) - COUNT(*)) FROM audit_entries")
stop_all

HR=$(echo "$H" | cut -d' ' -f1)
ratio() { awk -v a="$1" -v b="$HR" 'BEGIN { printf "%.3f", a / b }'; }
row() { # label result
  local rps=${2%%|*}; local p99=${2#*|}
  echo "| $1 | $rps | $p99 | $(ratio "$rps") |"
}
TABLE=$(cat <<TEOF
Run on $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), $(psql "$ADMIN" -Atc 'SHOW server_version' | cut -d' ' -f1) on the same machine;
\`scripts/bench-nodes.sh $DUR $CONNS\` (wrk, $CONNS connections in all, split between the nodes; nodes, database and load generator share the machine).

| store and nodes | load | requests/s | p99 (per node) | ratio to embedded /healthz |
|---|---|---|---|---|
| embedded, 1 node | \`GET /healthz\` (baseline) | $HR | $(echo "$H" | cut -d' ' -f2) | 1.000 |
$(row "embedded, 1 node" "$ER" | sed 's/^| embedded, 1 node |/| embedded, 1 node | `GET \/fhir\/Patient\/{id}` (audited read) |/')
$(row "embedded, 1 node" "$EW" | sed 's/^| embedded, 1 node |/| embedded, 1 node | `POST \/fhir\/Observation` (audited durable create) |/')
$(row "PostgreSQL, 1 node" "$PR1" | sed 's/^| PostgreSQL, 1 node |/| PostgreSQL, 1 node | audited read |/')
$(row "PostgreSQL, 1 node" "$PW1" | sed 's/^| PostgreSQL, 1 node |/| PostgreSQL, 1 node | audited durable create |/')
$(row "PostgreSQL, 2 nodes" "$PR2" | sed 's/^| PostgreSQL, 2 nodes |/| PostgreSQL, 2 nodes | audited read |/')
$(row "PostgreSQL, 2 nodes" "$PW2" | sed 's/^| PostgreSQL, 2 nodes |/| PostgreSQL, 2 nodes | audited durable create |/')

The shared audit log after the PostgreSQL runs: $AUDIT.
TEOF
)
echo "$TABLE"
if [ -f BENCHMARKS.md ] && grep -q '<!-- NODES:BEGIN -->' BENCHMARKS.md; then
  python3 - "$TABLE" <<'PY'
import sys, re
t = open("BENCHMARKS.md").read()
new = "<!-- NODES:BEGIN -->\n" + sys.argv[1] + "\n<!-- NODES:END -->"
t = re.sub(r"<!-- NODES:BEGIN -->.*?<!-- NODES:END -->", lambda m: new, t, flags=re.S)
open("BENCHMARKS.md", "w").write(t)
PY
fi
