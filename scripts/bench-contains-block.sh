#!/usr/bin/env bash
# `name:contains=` after a block of non-matching patients whose ids sort first (issue #29): the
# case the peer benchmark's create rounds make (`scripts/bench-peers.sh`, BENCHMARKS.md), without
# the peer. Loads N generated patients (`scripts/gen-patients.py`) and BLOCK patients `新患 太郎`
# with time-ordered ids (`019a…`, as a server-assigned UUIDv7) into one store with `mamori
# import`, then runs wrk with the peer script's three-letter romanised pieces against each given
# binary in turn (alternating, ROUNDS rounds, at 2 and 16 connections), and prints one line per
# run and the median requests/s per binary and connections. Not part of CI.
#
# Usage: scripts/bench-contains-block.sh BIN [BIN…]   (env: N=100000 BLOCK=28000 DUR=10 ROUNDS=2)
#   e.g. build two revisions' `target/release/mamori`, copy them aside, pass both.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: scripts/bench-contains-block.sh BIN [BIN…]" >&2; exit 2; }
for b in "$@"; do [ -x "$b" ] || { echo "bench-contains-block: \`$b\` is not an executable" >&2; exit 2; }; done
N=${N:-100000} BLOCK=${BLOCK:-28000} DUR=${DUR:-10} ROUNDS=${ROUNDS:-2}
for v in "$N" "$BLOCK" "$DUR" "$ROUNDS"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "bench-contains-block: N, BLOCK, DUR and ROUNDS are positive whole numbers, got \`$v\`" >&2; exit 2; }
done
command -v wrk >/dev/null || { echo "installing wrk (Debian package)"; apt-get install -y -qq wrk >/dev/null; }
. scripts/bench-lib.sh
WORK=$(mktemp -d)
SERVER=
trap '{ [ -n "$SERVER" ] && kill $SERVER && wait $SERVER; } 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT=${BENCH_PORT:-18183}

python3 scripts/gen-patients.py "$N" "$WORK/patients.ndjson" "$WORK/values.txt"
python3 - "$BLOCK" "$WORK/block.ndjson" <<'PY'
import json, sys
n, out = int(sys.argv[1]), open(sys.argv[2], "w", encoding="utf-8")
for i in range(n):
    p = {"resourceType": "Patient", "id": "019a%04x-0000-7000-8000-%012d" % (i // 1000, i),
         "name": [{"family": "新患", "given": ["太郎"]}], "gender": "male", "birthDate": "1990-01-01"}
    out.write(json.dumps(p, ensure_ascii=False) + "\n")
PY
echo "== loading $N patients and a block of $BLOCK sorting before them (mamori import, $(basename "$1"))"
"$1" import "$WORK/patients.ndjson" "$WORK/block.ndjson" --data-dir "$WORK/m" 2>/dev/null | tail -1
SECRET=$("$1" client add bench-block --scope "system/*.cruds" --token-lifetime 2h --data-dir "$WORK/m" 2>/dev/null | sed -n 's/^client_secret=//p')
python3 - "$WORK/values.txt" > "$WORK/contains.lua" <<'PY'
import sys, urllib.parse
xs = [l.split("\t", 1)[1].rstrip("\n") for l in open(sys.argv[1], encoding="utf-8") if l.startswith("contains\t")]
print('wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")')
print('wrk.headers["Accept"] = "application/fhir+json"')
print("local v = {" + ", ".join('"%s"' % urllib.parse.quote(x) for x in xs) + "}")
print('request = function() return wrk.format("GET", string.format("/fhir/Patient?name:contains=%s&_count=10", v[math.random(1, #v)])) end')
PY

results=()
for round in $(seq "$ROUNDS"); do
  bins=("$@")
  (( round % 2 == 0 )) && bins=($(printf '%s\n' "$@" | tac))
  for b in "${bins[@]}"; do
    MAMORI_LOG=warn "$b" serve --data-dir "$WORK/m" --listen 127.0.0.1:$PORT >"$WORK/server.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 600); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
    BENCH_TOKEN=$(curl -sf -u "bench-block:$SECRET" -d grant_type=client_credentials "http://127.0.0.1:$PORT/oauth/token" | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
    export BENCH_TOKEN
    DUR=2 wrk_run warm 2 -s "$WORK/contains.lua" "http://127.0.0.1:$PORT" >/dev/null
    for c in 2 16; do
      line=$(wrk_run "$(basename "$b")" "$c" -s "$WORK/contains.lua" "http://127.0.0.1:$PORT")
      IFS='|' read -r name rps p50 p99 errs n <<<"$line"
      echo "round $round  $name  $c conns  $rps req/s  p50 $(ms "$p50") ms  p99 $(ms "$p99") ms  non-2xx $errs"
      results+=("$name $c $rps")
    done
    kill $SERVER; wait $SERVER 2>/dev/null || true; SERVER=
  done
done
echo "== median requests/s"
printf '%s\n' "${results[@]}" | sort -k1,1 -k2,2n -k3,3n | awk '
  { k = $1 " at " $2 " connections"; v[k, ++n[k]] = $3; if (!(k in seen)) { seen[k] = 1; order[++m] = k } }
  END { for (i = 1; i <= m; i++) { k = order[i]; c = n[k]; med = (c % 2) ? v[k, (c + 1) / 2] : (v[k, c / 2] + v[k, c / 2 + 1]) / 2; printf "%s: %.1f\n", k, med } }'
