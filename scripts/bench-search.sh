#!/usr/bin/env bash
# Search benchmark (P3, P4, P7): generates N synthetic Japanese resources (scripts/gen-ndjson.py:
# 1 patient per 50 resources, Observations of 4 codes), imports them with `mamori import`
# (P4: resources/s, index rows included), then loads the server from wrk on loopback with
#   - GET /healthz (the baseline, same run),
#   - GET /fhir/Observation?patient=X&code=Y (random patient and code),
#   - GET /fhir/Patient?name=… (random family name in kanji, katakana or hiragana),
#   - GET /fhir/Patient?family:exact=… and ?name:contains=… (three characters of a reading, #29),
#   - GET /fhir/Observation?_lastUpdated=… (every Observation, none, this year's, #29),
#   - GET /fhir/Observation?date=… and ?value-quantity=… (ranges with every kind of bound, #29),
#   - GET /fhir/Observation?subject:Patient.name=… (a chain over a common family name, #29),
#   each first with 2 connections (one per core: the latency of P3) and then with CONNECTIONS
#   (throughput; its p99 is mostly queueing),
# and reads the server's peak RSS after the load (P7). Writes the table into BENCHMARKS.md
# between the SEARCH-N markers.
#
# Usage: scripts/bench-search.sh [N=100000] [DURATION_SECONDS=10] [CONNECTIONS=8]
# BENCH_BIN=path/to/mamori: load that binary instead of building this tree (no rewrite of
# BENCHMARKS.md); BENCH_NO_WRITE=1: no rewrite; BENCH_STORE=DIR: import into DIR and keep it, or,
# when DIR already holds a store, load that one without generating or importing (A/B runs of the
# queries on one store; the import figure then reads `kept`); BENCH_FIGURES=FILE: append the P3/P4/P7 figures as
# `FIGURE key value` lines (scripts/bench-suite.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
DUR=${2:-10}
CONNS=${3:-8}
command -v wrk >/dev/null || { echo "installing wrk (Debian package)"; apt-get install -y -qq wrk >/dev/null; }
if [ -n "${BENCH_BIN:-}" ]; then BIN=$BENCH_BIN; else cargo build --release --quiet; BIN=${CARGO_TARGET_DIR:-target}/release/mamori; fi
PORT=${BENCH_PORT:-18181}
SERVER=
if [ -n "${BENCH_STORE:-}" ] && [ -f "$BENCH_STORE/d/mamori.db" ]; then
  # A kept store (A/B runs of the queries): no generation, no import, nothing removed.
  DATA=$BENCH_STORE IMPORT_RATE=kept
  trap '{ kill $SERVER && wait $SERVER; } 2>/dev/null || true' EXIT
  # A freshly imported store is in the OS page cache; a kept one may have been evicted since (a
  # build reads gigabytes), which made the Observation query 20x slower in one run: read it once.
  cat "$DATA/d/mamori.db" >/dev/null
else
  if [ -n "${BENCH_STORE:-}" ]; then
    DATA=$BENCH_STORE; mkdir -p "$DATA"
    trap '{ kill $SERVER && wait $SERVER; } 2>/dev/null || true; rm -f "$DATA/load.ndjson"' EXIT
  else
    DATA=$(mktemp -d)
    trap '{ kill $SERVER && wait $SERVER; } 2>/dev/null || true; rm -rf "$DATA"' EXIT
  fi
  python3 scripts/gen-ndjson.py "$N" "$DATA/load.ndjson"
  T0=$(date +%s.%N)
  $BIN import "$DATA/load.ndjson" --data-dir "$DATA/d" 2>/dev/null
  T1=$(date +%s.%N)
  IMPORT_RATE=$(awk -v n="$N" -v a="$T0" -v b="$T1" 'BEGIN { printf "%.0f", n / (b - a) }')
  rm -f "$DATA/load.ndjson"
fi
DB_MB=$(du -sm "$DATA/d" | cut -f1)

SECRET=$($BIN client add "bench-$$" --scope "system/*.cruds" --token-lifetime 1h --data-dir "$DATA/d" 2>/dev/null | sed -n 's/^client_secret=//p')
MAMORI_LOG=warn $BIN serve --data-dir "$DATA/d" --listen 127.0.0.1:$PORT >/dev/null 2>&1 &
SERVER=$!
for _ in $(seq 600); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
curl -sf http://127.0.0.1:$PORT/healthz >/dev/null || { echo "bench-search: the server did not start within 60 s" >&2; exit 1; }
TOKEN=$(curl -sf -u "bench-$$:$SECRET" -d grant_type=client_credentials http://127.0.0.1:$PORT/oauth/token | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
PATIENTS=$(( N / 50 > 0 ? N / 50 : 1 ))

OLUA=$(mktemp --suffix .lua)
cat > "$OLUA" <<LUAEOF
wrk.headers["Authorization"] = "Bearer $TOKEN"
local codes = {"8310-5", "8867-4", "2345-7", "718-7"}
request = function()
  local p = string.format("pt-%07d", math.random(0, $PATIENTS - 1))
  return wrk.format("GET", "/fhir/Observation?patient=" .. p .. "&code=http://loinc.org%7C" .. codes[math.random(1, 4)])
end
LUAEOF
# pick_lua PATH_AND_QUERY VALUE… → a wrk script requesting PATH_AND_QUERY followed by one of the
# values (percent-encoded) at random.
pick_lua() {
  local f; f=$(mktemp --suffix .lua)
  python3 - "$TOKEN" "$@" > "$f" <<'PY'
import sys, urllib.parse
token, query, values = sys.argv[1], sys.argv[2], sys.argv[3:]
print(f'wrk.headers["Authorization"] = "Bearer {token}"')
print("local v = {" + ", ".join('"%s"' % urllib.parse.quote(x) for x in values) + "}")
print(f'request = function() return wrk.format("GET", "{query}" .. v[math.random(1, #v)]) end')
PY
  echo "$f"
}
# A random family name in kanji, katakana or hiragana.
NLUA=$(pick_lua "/fhir/Patient?name=" 山田 ヤマダ やまだ 佐藤 サトウ さとう 鈴木 スズキ すずき 高橋 タカハシ たかはし \
  田中 タナカ たなか 伊藤 イトウ いとう 渡辺 ワタナベ わたなべ 中村 ナカムラ なかむら)
# The string modifiers (#29): `:exact` with a family name as written (kanji or katakana), and
# `:contains` with three characters of a reading (katakana folds to hiragana).
XLUA=$(pick_lua "/fhir/Patient?family:exact=" 山田 ヤマダ 佐藤 サトウ 鈴木 スズキ 高橋 タカハシ 田中 タナカ 伊藤 イトウ \
  渡辺 ワタナベ 中村 ナカムラ)
CLUA=$(pick_lua "/fhir/Patient?name:contains=" やまだ まだた さとう すずき かはし たなか なかは いとう わたな たなべ \
  なかむ かむら ろうや はなこ)
# A chain (#29): Observations whose subject has a family name (kanji, katakana or hiragana) —
# about one in eight of the patients for the commonest, so ~120,000 references at 1M.
HLUA=$(pick_lua "/fhir/Observation?subject:Patient.name=" 山田 ヤマダ やまだ 佐藤 サトウ さとう 鈴木 スズキ すずき \
  高橋 タカハシ たかはし 田中 タナカ たなか)
# `_lastUpdated` (#29): ranges holding every Observation (walked), none (before and after the
# import), and this year's (every one, unless the year turned during the import).
LLUA=$(pick_lua "/fhir/Observation?_lastUpdated=" ge2020-01-01 lt2020-01-01 "ge$(date -u +%Y)" \
  "gt$(date -u -d '+1 day' +%Y-%m-%d)" "le$(date -u -d '+1 day' +%Y-%m-%d)")
# Date and number ranges (#29): a day, a month, open ranges above and below a point, one of
# them empty, and quantities equal to, above and below a value (Observations of 2026).
RLUA=$(mktemp --suffix .lua)
cat > "$RLUA" <<LUAEOF
wrk.headers["Authorization"] = "Bearer $TOKEN"
local q = {"date=2026-10-08", "date=2026-03", "date=ge2026-11-20", "date=le2026-01-03", "date=gt2030-01-01",
  "date=eb2021-05-03", "value-quantity=50", "value-quantity=120", "value-quantity=gt150", "value-quantity=lt60",
  "value-quantity=ge72", "value-quantity=eb10"}
request = function()
  return wrk.format("GET", "/fhir/Observation?" .. q[math.random(1, #q)])
end
LUAEOF

. scripts/bench-lib.sh
run() { wrk_run "$@"; } # name, connections, then wrk args
# Latency (P3) with one connection per core, where the server is not saturated; then throughput
# with CONNECTIONS, where the p99 is mostly queueing behind other requests on two shared cores.
H=$(run healthz "$CONNS" http://127.0.0.1:$PORT/healthz)
O2=$(run obs 2 -s "$OLUA" http://127.0.0.1:$PORT)
P2=$(run name 2 -s "$NLUA" http://127.0.0.1:$PORT)
O=$(run obs "$CONNS" -s "$OLUA" http://127.0.0.1:$PORT)
P=$(run name "$CONNS" -s "$NLUA" http://127.0.0.1:$PORT)
X2=$(run exact 2 -s "$XLUA" http://127.0.0.1:$PORT)
C2=$(run contains 2 -s "$CLUA" http://127.0.0.1:$PORT)
X=$(run exact "$CONNS" -s "$XLUA" http://127.0.0.1:$PORT)
C=$(run contains "$CONNS" -s "$CLUA" http://127.0.0.1:$PORT)
RSS_MB=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' /proc/$SERVER/status)
L2=$(run lastupdated 2 -s "$LLUA" http://127.0.0.1:$PORT)
L=$(run lastupdated "$CONNS" -s "$LLUA" http://127.0.0.1:$PORT)
R2=$(run ranges 2 -s "$RLUA" http://127.0.0.1:$PORT)
R=$(run ranges "$CONNS" -s "$RLUA" http://127.0.0.1:$PORT)
# The chain last, its peak apart: while its guarded join read every visible patient of the name
# (until session 36), the server's peak grew from 123-149 MB to 237-329 MB at 1M with it; checked
# per candidate, 147-161 MB. P7 is the load above, as it was before the chain was measured.
CH2=$(run chain 2 -s "$HLUA" http://127.0.0.1:$PORT)
CH=$(run chain "$CONNS" -s "$HLUA" http://127.0.0.1:$PORT)
RSS_CHAIN_MB=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' /proc/$SERVER/status)
rm -f "$OLUA" "$NLUA" "$XLUA" "$CLUA" "$HLUA" "$LLUA" "$RLUA"
# One sample answer, to show what a query returns.
SAMPLE=$(curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/fhir/Patient?name=%E5%B1%B1%E7%94%B0&_summary=count" | sed 's/.*"total":\([0-9]*\).*/\1/')

f() { echo "$1" | cut -d'|' -f"$2"; }
HR=$(f "$H" 2)
TABLE=$(cat <<TEOF
Run on $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -sr); \`scripts/bench-search.sh $N $DUR $CONNS\`
($N resources: $PATIENTS patients, $((N - PATIENTS)) Observations; store ${DB_MB} MB; \`Patient?name=山田\` matches $SAMPLE).

| measure | value | p50 | p99 | non-2xx | ratio to /healthz |
|---|---|---|---|---|---|
| \`mamori import\` (P4), resources/s | $IMPORT_RATE | | | | |
| \`GET /healthz\` (baseline), requests/s | $HR | $(f "$H" 3) | $(f "$H" 4) | $(f "$H" 5) | 1.000 |
| \`GET /fhir/Observation?patient=X&code=Y\` (P3), 2 connections, requests/s | $(f "$O2" 2) | $(f "$O2" 3) | $(f "$O2" 4) | $(f "$O2" 5) | $(ratio "$(f "$O2" 2)" "$HR") |
| \`GET /fhir/Patient?name=…\` (P3), 2 connections, requests/s | $(f "$P2" 2) | $(f "$P2" 3) | $(f "$P2" 4) | $(f "$P2" 5) | $(ratio "$(f "$P2" 2)" "$HR") |
| \`GET /fhir/Observation?patient=X&code=Y\` (P3), $CONNS connections, requests/s | $(f "$O" 2) | $(f "$O" 3) | $(f "$O" 4) | $(f "$O" 5) | $(ratio "$(f "$O" 2)" "$HR") |
| \`GET /fhir/Patient?name=…\` (P3), $CONNS connections, requests/s | $(f "$P" 2) | $(f "$P" 3) | $(f "$P" 4) | $(f "$P" 5) | $(ratio "$(f "$P" 2)" "$HR") |
| \`GET /fhir/Patient?family:exact=…\`, 2 connections, requests/s | $(f "$X2" 2) | $(f "$X2" 3) | $(f "$X2" 4) | $(f "$X2" 5) | $(ratio "$(f "$X2" 2)" "$HR") |
| \`GET /fhir/Patient?name:contains=…\` (3 characters), 2 connections, requests/s | $(f "$C2" 2) | $(f "$C2" 3) | $(f "$C2" 4) | $(f "$C2" 5) | $(ratio "$(f "$C2" 2)" "$HR") |
| \`GET /fhir/Patient?family:exact=…\`, $CONNS connections, requests/s | $(f "$X" 2) | $(f "$X" 3) | $(f "$X" 4) | $(f "$X" 5) | $(ratio "$(f "$X" 2)" "$HR") |
| \`GET /fhir/Patient?name:contains=…\` (3 characters), $CONNS connections, requests/s | $(f "$C" 2) | $(f "$C" 3) | $(f "$C" 4) | $(f "$C" 5) | $(ratio "$(f "$C" 2)" "$HR") |
| \`GET /fhir/Observation?_lastUpdated=…\`, 2 connections, requests/s | $(f "$L2" 2) | $(f "$L2" 3) | $(f "$L2" 4) | $(f "$L2" 5) | $(ratio "$(f "$L2" 2)" "$HR") |
| \`GET /fhir/Observation?_lastUpdated=…\`, $CONNS connections, requests/s | $(f "$L" 2) | $(f "$L" 3) | $(f "$L" 4) | $(f "$L" 5) | $(ratio "$(f "$L" 2)" "$HR") |
| \`GET /fhir/Observation?date=…\` and \`value-quantity=…\` (ranges), 2 connections, requests/s | $(f "$R2" 2) | $(f "$R2" 3) | $(f "$R2" 4) | $(f "$R2" 5) | $(ratio "$(f "$R2" 2)" "$HR") |
| \`GET /fhir/Observation?date=…\` and \`value-quantity=…\` (ranges), $CONNS connections, requests/s | $(f "$R" 2) | $(f "$R" 3) | $(f "$R" 4) | $(f "$R" 5) | $(ratio "$(f "$R" 2)" "$HR") |
| \`GET /fhir/Observation?subject:Patient.name=…\` (chain), 2 connections, requests/s | $(f "$CH2" 2) | $(f "$CH2" 3) | $(f "$CH2" 4) | $(f "$CH2" 5) | $(ratio "$(f "$CH2" 2)" "$HR") |
| \`GET /fhir/Observation?subject:Patient.name=…\` (chain), $CONNS connections, requests/s | $(f "$CH" 2) | $(f "$CH" 3) | $(f "$CH" 4) | $(f "$CH" 5) | $(ratio "$(f "$CH" 2)" "$HR") |
| server peak RSS after the load (P7) | ${RSS_MB} MB | | | | |
| server peak RSS after the \`_lastUpdated\` and chain loads too | ${RSS_CHAIN_MB} MB | | | | |
TEOF
)
echo "$TABLE"
if [ -n "${BENCH_FIGURES:-}" ]; then
  {
    echo "FIGURE P3.obs_p99_ms $(ms "$(f "$O2" 4)")"
    echo "FIGURE P3.name_p99_ms $(ms "$(f "$P2" 4)")"
    echo "FIGURE P3.obs_p99_ms_loaded $(ms "$(f "$O" 4)")"
    echo "FIGURE P3.name_p99_ms_loaded $(ms "$(f "$P" 4)")"
    echo "FIGURE P3.exact_p99_ms $(ms "$(f "$X2" 4)")"
    echo "FIGURE P3.contains_p99_ms $(ms "$(f "$C2" 4)")"
    echo "FIGURE P3.exact_p99_ms_loaded $(ms "$(f "$X" 4)")"
    echo "FIGURE P3.contains_p99_ms_loaded $(ms "$(f "$C" 4)")"
    echo "FIGURE P3.last_updated_p99_ms $(ms "$(f "$L2" 4)")"
    echo "FIGURE P3.last_updated_p99_ms_loaded $(ms "$(f "$L" 4)")"
    echo "FIGURE P3.ranges_p99_ms $(ms "$(f "$R2" 4)")"
    echo "FIGURE P3.ranges_p99_ms_loaded $(ms "$(f "$R" 4)")"
    echo "FIGURE P3.chain_p99_ms $(ms "$(f "$CH2" 4)")"
    echo "FIGURE P3.chain_p99_ms_loaded $(ms "$(f "$CH" 4)")"
    echo "FIGURE P4.import_per_s $IMPORT_RATE"
    echo "FIGURE P7.rss_mb $RSS_MB"
  } >> "$BENCH_FIGURES"
fi
if [ -z "${BENCH_BIN:-}" ] && [ -z "${BENCH_NO_WRITE:-}" ] && [ -f BENCHMARKS.md ] && grep -q "<!-- SEARCH-$N:BEGIN -->" BENCHMARKS.md; then
  python3 - "$TABLE" "$N" <<'PY'
import sys, re
t = open("BENCHMARKS.md").read()
n = sys.argv[2]
new = f"<!-- SEARCH-{n}:BEGIN -->\n" + sys.argv[1] + f"\n<!-- SEARCH-{n}:END -->"
t = re.sub(rf"<!-- SEARCH-{n}:BEGIN -->.*?<!-- SEARCH-{n}:END -->", lambda _: new, t, flags=re.S)
open("BENCHMARKS.md", "w").write(t)
PY
fi
