#!/usr/bin/env bash
# Mamori beside a peer FHIR server on one machine (#29): Helios FHIR Server (`helios-hfs` 0.2.7,
# Rust, SQLite, installed from crates.io into a scratch directory), loaded with the same
# generated patients (scripts/gen-patients.py: kanji, katakana and romanised names), then each
# workload on each server in turn — the order alternating every round — with wrk on loopback:
#   read      GET Patient/{id} (random id)
#   create    POST Patient
#   family=   Patient?family=<kanji surname>&_count=10            (prefix, the default)
#   exact     Patient?family:exact=<kanji surname>&_count=10
#   contains  Patient?name:contains=<3 letters of a romanised name>&_count=10
# Mamori runs as it ships: every request authenticated (OAuth bearer token), authorised (Cedar)
# and audited durably (the audit entry is fsynced before the answer). Helios runs with its
# defaults: no authentication, no audit. Prints each round's ratio (Mamori ÷ Helios requests/s)
# and the median per workload, and writes the table into BENCHMARKS.md between the PEERS markers.
# Not part of CI (it builds Helios: ~40 minutes on 2 cores the first time, kept afterwards).
#
# Usage: scripts/bench-peers.sh [PATIENTS=100000] [DURATION_SECONDS=10] [CONNECTIONS=16] [ROUNDS=3]
# BENCH_PEERS_DIR: where Helios and its spec files are kept (default ~/.cache/mamori-bench-peers);
# BENCH_NO_WRITE=1: print only.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000} DUR=${2:-10} CONNS=${3:-16} ROUNDS=${4:-3}
for v in "$N" "$DUR" "$CONNS" "$ROUNDS"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "bench-peers: arguments are positive whole numbers, got \`$v\`; usage: scripts/bench-peers.sh [PATIENTS] [DURATION_SECONDS] [CONNECTIONS] [ROUNDS]" >&2; exit 2; }
done
KEEP=${BENCH_PEERS_DIR:-$HOME/.cache/mamori-bench-peers}
HELIOS_VERSION=0.2.7
mkdir -p "$KEEP"
command -v wrk >/dev/null || { echo "installing wrk (Debian package)"; apt-get install -y -qq wrk >/dev/null; }
if [ ! -x "$KEEP/helios/bin/hfs" ]; then
  echo "== installing helios-hfs $HELIOS_VERSION from crates.io into $KEEP/helios (once)"
  cargo install helios-hfs --version "$HELIOS_VERSION" --locked --root "$KEEP/helios" --quiet
fi
# Helios reads the R4 SearchParameter and CompartmentDefinition bundles from its data directory;
# they come from the official R4 package on the npm registry (CC0).
if [ ! -f "$KEEP/hdata/search-parameters-r4.json" ]; then
  echo "== fetching the R4 search parameters for Helios (npm: hl7.fhir.r4.examples@4.0.1)"
  (cd "$KEEP" && npm pack hl7.fhir.r4.examples@4.0.1 --silent >/dev/null && tar xzf hl7.fhir.r4.examples-4.0.1.tgz)
  mkdir -p "$KEEP/hdata"
  python3 - "$KEEP/package" "$KEEP/hdata" <<'PY'
import glob, json, os, sys
pkg, out = sys.argv[1], sys.argv[2]
for prefix, name in [("SearchParameter", "search-parameters-r4.json"), ("CompartmentDefinition", "compartment-definitions-r4.json")]:
    entries = []
    for f in sorted(glob.glob(os.path.join(pkg, prefix + "-*.json"))):
        r = json.load(open(f))
        entries.append({"fullUrl": r.get("url"), "resource": r})
    json.dump({"resourceType": "Bundle", "type": "collection", "entry": entries}, open(os.path.join(out, name), "w"))
PY
fi
cargo build --release --quiet --locked
BIN=${CARGO_TARGET_DIR:-target}/release/mamori
HFS=$KEEP/helios/bin/hfs
MPORT=${BENCH_PORT:-18181} HPORT=$(( ${BENCH_PORT:-18181} + 1 ))
WORK=$(mktemp -d)
MSERVER= HSERVER=
trap '{ kill $MSERVER $HSERVER && wait $MSERVER $HSERVER; } 2>/dev/null || true; rm -rf "$WORK"' EXIT

echo "== generating $N patients"
python3 scripts/gen-patients.py "$N" "$WORK/patients.ndjson" "$WORK/values.txt"
echo "== loading Mamori (mamori import)"
$BIN import "$WORK/patients.ndjson" --data-dir "$WORK/m" 2>/dev/null | tail -1
SECRET=$($BIN client add "bench-peers" --scope "system/*.cruds" --token-lifetime 2h --data-dir "$WORK/m" 2>/dev/null | sed -n 's/^client_secret=//p')
MAMORI_LOG=warn $BIN serve --data-dir "$WORK/m" --listen 127.0.0.1:$MPORT >"$WORK/mamori.log" 2>&1 &
MSERVER=$!
mkdir -p "$WORK/h"
(cd "$WORK/h" && exec "$HFS" --port $HPORT --log-level warn --data-dir "$KEEP/hdata" --base-url "http://127.0.0.1:$HPORT" >"$WORK/helios.log" 2>&1) &
HSERVER=$!
for url in "http://127.0.0.1:$MPORT/healthz" "http://127.0.0.1:$HPORT/health"; do
  for _ in $(seq 600); do curl -sf "$url" >/dev/null && break; sleep 0.1; done
  curl -sf "$url" >/dev/null || { echo "bench-peers: $url did not answer within 60 s" >&2; exit 1; }
done
TOKEN=$(curl -sf -u "bench-peers:$SECRET" -d grant_type=client_credentials http://127.0.0.1:$MPORT/oauth/token | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
echo "== loading Helios (batch Bundles of PUTs, 4 at a time)"
python3 - "$WORK/patients.ndjson" "http://127.0.0.1:$HPORT" <<'PY'
import json, sys, urllib.request, concurrent.futures
path, base = sys.argv[1], sys.argv[2]
lines = open(path, encoding="utf-8").read().splitlines()
def send(chunk):
    entries = []
    for l in chunk:
        r = json.loads(l)
        entries.append({"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}})
    body = json.dumps({"resourceType": "Bundle", "type": "batch", "entry": entries}).encode()
    req = urllib.request.Request(base + "/", data=body, method="POST", headers={"Content-Type": "application/fhir+json"})
    with urllib.request.urlopen(req, timeout=600) as resp:
        out = json.load(resp)
    bad = [e for e in out.get("entry", []) if not e.get("response", {}).get("status", "").startswith("20")]
    if bad:
        raise SystemExit(f"helios refused {len(bad)} entries: {bad[0]}")
    return len(chunk)
chunks = [lines[i:i + 500] for i in range(0, len(lines), 500)]
with concurrent.futures.ThreadPoolExecutor(4) as ex:
    print(sum(ex.map(send, chunks)), "patients loaded")
PY
# The same answers from both (a check that the comparison is of like with like).
V=$(awk -F'\t' '$1 == "family" { print $2; exit }' "$WORK/values.txt")
VQ=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$V")
mt=$(curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$MPORT/fhir/Patient?family:exact=$VQ&_count=1000" | python3 -c 'import json,sys; print(sorted(e["resource"]["id"] for e in json.load(sys.stdin).get("entry", []) if e.get("search", {}).get("mode") == "match"))')
ht=$(curl -sf "http://127.0.0.1:$HPORT/Patient?family:exact=$VQ&_count=1000" | python3 -c 'import json,sys; print(sorted(e["resource"]["id"] for e in json.load(sys.stdin).get("entry", []) if e.get("search", {}).get("mode", "match") == "match"))')
[ "$mt" = "$ht" ] || { echo "bench-peers: family:exact=$V differs: Mamori $mt, Helios $ht" >&2; exit 1; }
echo "== family:exact=$V: both answer $(echo "$mt" | tr -cd ',' | wc -c | awk '{print $1 + 1}') patients"

# One wrk script per workload and server: the values drawn at random from the generated set.
lua() { # workload server(m|h)
  local w=$1 s=$2 prefix= auth=
  if [ "$s" = m ]; then prefix=/fhir; auth="wrk.headers[\"Authorization\"] = \"Bearer $TOKEN\""; fi
  python3 - "$WORK/values.txt" "$w" "$prefix" "$auth" <<'PY'
import sys, urllib.parse
vals, w, prefix, auth = sys.argv[1:5]
kind = {"read": "id", "family": "family", "exact": "family", "contains": "contains"}.get(w)
xs = [l.split("\t", 1)[1].rstrip("\n") for l in open(vals, encoding="utf-8") if kind and l.startswith(kind + "\t")]
print(auth)
print('wrk.headers["Accept"] = "application/fhir+json"')
if w == "create":
    body = '{"resourceType":"Patient","name":[{"family":"新患","given":["太郎"]}],"gender":"male","birthDate":"1990-01-01"}'
    print('wrk.method = "POST"')
    print('wrk.headers["Content-Type"] = "application/fhir+json"')
    print("wrk.body = [[" + body + "]]")
    print(f'request = function() return wrk.format(nil, "{prefix}/Patient") end')
else:
    q = {"read": "/Patient/%s", "family": "/Patient?family=%s&_count=10", "exact": "/Patient?family:exact=%s&_count=10",
         "contains": "/Patient?name:contains=%s&_count=10"}[w]
    print("local v = {" + ", ".join('"%s"' % urllib.parse.quote(x) for x in xs) + "}")
    print(f'request = function() return wrk.format("GET", string.format("{prefix}{q}", v[math.random(1, #v)])) end')
PY
}
. scripts/bench-lib.sh
# settle PID: waits until the server is idle — under 5 % of a core over a second — for at most
# 120 s. A server keeps working on the requests wrk left in flight (Helios's slow searches take
# seconds each), and the next run, on the other server, must not share the cores with that
# backlog: in session 31's first run Mamori's `contains` fell from 967/s (run first) to 38–59/s
# (run right after Helios's). Prints how long it waited when that was over a second.
settle() {
  local pid=$1 a b waited=0
  while (( waited < 120 )); do
    a=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null) || return 0
    sleep 1; waited=$((waited + 1))
    b=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null) || return 0
    (( b - a < 5 )) && { (( waited > 1 )) && echo "  (waited ${waited} s for the server to go idle)"; return 0; }
  done
  echo "  (the server was still busy after 120 s: the next figure shares the cores with it)"
}
WORKLOADS=(read family exact contains create)
declare -A LABEL=([read]="GET Patient/{id}" [family]="Patient?family=… (prefix)" [exact]="Patient?family:exact=…" [contains]="Patient?name:contains=…" [create]="POST Patient")
for w in "${WORKLOADS[@]}"; do lua "$w" m > "$WORK/$w-m.lua"; lua "$w" h > "$WORK/$w-h.lua"; done
RES=$WORK/results.txt
: > "$RES"
for r in $(seq "$ROUNDS"); do
  if (( r % 2 )); then ORDER=(m h); else ORDER=(h m); fi
  for w in "${WORKLOADS[@]}"; do
    for s in "${ORDER[@]}"; do
      port=$([ "$s" = m ] && echo $MPORT || echo $HPORT)
      # A request may take up to 10 s before wrk counts it as a timeout (its default is 2 s).
      line=$(wrk_run "$w" "$CONNS" --timeout 10s -s "$WORK/$w-$s.lua" "http://127.0.0.1:$port")
      echo "$r|$s|$line" >> "$RES"
      settle "$([ "$s" = m ] && echo "$MSERVER" || echo "$HSERVER")"
    done
    m=$(awk -F'|' -v r="$r" -v w="$w" '$1 == r && $2 == "m" && $3 == w { print $4 }' "$RES")
    h=$(awk -F'|' -v r="$r" -v w="$w" '$1 == r && $2 == "h" && $3 == w { print $4 }' "$RES")
    printf 'round %s %-9s Mamori %8s/s  Helios %8s/s  ratio %s\n' "$r" "$w" "$m" "$h" \
      "$(awk -v a="$m" -v b="$h" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "∞ (Helios answered none in time)" }')"
  done
done
MRSS=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' /proc/$MSERVER/status)
HRSS=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' /proc/$HSERVER/status)

# Per workload: median requests/s and p99 of each server over the rounds, the median of the
# rounds' ratios, and their range; non-2xx answers summed (any makes the row suspect).
TABLE=$(python3 - "$RES" "$N" "$DUR" "$CONNS" "$ROUNDS" "$MRSS" "$HRSS" "$HELIOS_VERSION" <<'PY'
import statistics, sys, subprocess
res, n, dur, conns, rounds, mrss, hrss, hv = sys.argv[1:9]
rows = [l.rstrip("\n").split("|") for l in open(res)]
def ms(x):
    u = x.lstrip("0123456789."); v = float(x[: len(x) - len(u)])
    return v / 1000 if u == "us" else v * 1000 if u == "s" else v * 60000 if u == "m" else v
label = {"read": "`GET Patient/{id}`", "family": "`Patient?family=…` (prefix)", "exact": "`Patient?family:exact=…`",
         "contains": "`Patient?name:contains=…` (3 letters)", "create": "`POST Patient`"}
print(f"Run on {subprocess.check_output(['date', '-u', '+%Y-%m-%dT%H:%MZ'], text=True).strip()}, "
      f"{subprocess.check_output(['nproc'], text=True).strip()} cores; `scripts/bench-peers.sh {n} {dur} {conns} {rounds}` "
      f"({n} patients; {conns} connections; {rounds} rounds of {dur} s per server and workload, the order alternating).")
print()
print("| workload | Mamori req/s | Mamori p99 | Helios req/s | Helios p99 | ratio per round | median ratio | non-2xx M/H |")
print("|---|---|---|---|---|---|---|---|")
for w in ["read", "family", "exact", "contains", "create"]:
    m = [r for r in rows if r[1] == "m" and r[2] == w]
    h = [r for r in rows if r[1] == "h" and r[2] == w]
    ratios = [float(a[3]) / float(b[3]) if float(b[3]) > 0 else float("inf") for a, b in zip(m, h)]
    med = lambda xs: statistics.median(xs)
    print(f"| {label[w]} | {med([float(r[3]) for r in m]):.0f} | {med([ms(r[5]) for r in m]):.2f} ms | "
          f"{med([float(r[3]) for r in h]):.0f} | {med([ms(r[5]) for r in h]):.2f} ms | "
          f"{' '.join(f'{x:.2f}' if x != float('inf') else '∞' for x in ratios)} | **{(f'{med(ratios):.2f}' if med(ratios) != float('inf') else '∞')}×** | "
          f"{sum(int(r[6]) for r in m)}/{sum(int(r[6]) for r in h)} |")
print(f"| peak RSS after the runs | {mrss} MB | | {hrss} MB | | | | |")
PY
)
echo
echo "$TABLE"
if [ -z "${BENCH_NO_WRITE:-}" ] && [ -f BENCHMARKS.md ] && grep -q "<!-- PEERS:BEGIN -->" BENCHMARKS.md; then
  python3 - "$TABLE" <<'PY'
import sys, re
t = open("BENCHMARKS.md").read()
new = "<!-- PEERS:BEGIN -->\n" + sys.argv[1] + "\n<!-- PEERS:END -->"
t = re.sub(r"<!-- PEERS:BEGIN -->.*?<!-- PEERS:END -->", lambda _: new, t, flags=re.S)
open("BENCHMARKS.md", "w").write(t)
PY
fi
