#!/usr/bin/env bash
# The console's dashboard at scale (issue #24: under 200 ms of server time with 100,000 patients
# and 1,000,000 audit entries): the security manager's home page (2FA coverage, dormant and
# locked accounts, break-glass queue, access reviews, recent alerts, the audit checkpoint),
# signed in through the two-factor pages, one request at a time (wrk -c1, so latency is the
# server's, not a queue's) beside GET /healthz in the same run; the server's own figure for the
# page (its /metrics histogram: time from arrival to response head) beside wrk's.
#
# Usage: scripts/bench-console.sh [PATIENTS=100000] [AUDIT_ENTRIES=1000000] [DURATION=10]
# BENCH_BIN=path/to/mamori: use that binary. BENCH_NO_WRITE=1: print, do not rewrite
# BENCHMARKS.md (between the CONSOLE markers). The 1,000,000 audit entries are made the way a
# hospital makes them — audited FHIR reads over HTTP — which takes a few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PATIENTS=${1:-100000}
AUDIT=${2:-1000000}
DUR=${3:-10}
for v in "$PATIENTS" "$AUDIT" "$DUR"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "bench-console: sizes are positive whole numbers, got \`$v\`; usage: scripts/bench-console.sh [PATIENTS] [AUDIT_ENTRIES] [DURATION]" >&2; exit 2; }
done
command -v wrk >/dev/null || { echo "installing wrk (Debian package)"; apt-get install -y -qq wrk >/dev/null; }
if [ -n "${BENCH_BIN:-}" ]; then BIN=$BENCH_BIN; else cargo build --release --quiet --locked; BIN=${CARGO_TARGET_DIR:-target}/release/mamori; fi
DATA=$(mktemp -d)
PORT=${BENCH_PORT:-18190}
BASE=http://127.0.0.1:$PORT
trap '{ kill $SERVER && wait $SERVER; } 2>/dev/null || true; rm -rf "$DATA"' EXIT
. scripts/bench-lib.sh

echo "== $PATIENTS patients"
$BIN init --data-dir "$DATA" >/dev/null
python3 - "$PATIENTS" > "$DATA/patients.ndjson" <<'PY'
import json, random, sys
rnd = random.Random(20261204)
fam = [("山田", "ヤマダ"), ("佐藤", "サトウ"), ("鈴木", "スズキ"), ("高橋", "タカハシ"), ("田中", "タナカ")]
giv = [("太郎", "タロウ"), ("花子", "ハナコ"), ("一郎", "イチロウ"), ("美咲", "ミサキ")]
for i in range(int(sys.argv[1])):
    f, g = rnd.choice(fam), rnd.choice(giv)
    print(json.dumps({"resourceType": "Patient", "id": f"pt-{i:07d}",
        "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.11311234567", "value": f"{i:08d}"}],
        "name": [{"text": f"{f[0]} {g[0]}", "family": f[0], "given": [g[0]]}, {"text": f"{f[1]} {g[1]}", "family": f[1], "given": [g[1]]}],
        "gender": rnd.choice(["male", "female"]), "birthDate": f"{rnd.randint(1930, 2020)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"},
        ensure_ascii=False))
PY
$BIN import "$DATA/patients.ndjson" --data-dir "$DATA" >/dev/null
rm -f "$DATA/patients.ndjson"

# The people on the dashboard: the security manager, staff with and without a second factor.
PW='k7#Vq2!mZp-w9'
printf '%s' "$PW" | $BIN user add anzen --role security_manager --password-stdin --data-dir "$DATA" >/dev/null
SECRET=$($BIN user enroll-totp anzen --data-dir "$DATA" 2>/dev/null | sed -n 's/.*secret=\([A-Z2-7]*\).*/\1/p')
for i in $(seq 1 40); do
  printf '%s' "$PW" | $BIN user add "staff$i" --role nurse --password-stdin --data-dir "$DATA" >/dev/null
  if [ $((i % 3)) -ne 0 ]; then $BIN user enroll-totp "staff$i" --data-dir "$DATA" >/dev/null 2>&1; fi
done
CSECRET=$($BIN client add bench --scope "system/*.cruds" --token-lifetime 1h --data-dir "$DATA" 2>/dev/null | sed -n 's/^client_secret=//p')

MAMORI_LOG=warn $BIN serve --data-dir "$DATA" --listen 127.0.0.1:$PORT >/dev/null 2>&1 &
SERVER=$!
for _ in $(seq 100); do curl -sf $BASE/healthz >/dev/null && break; sleep 0.1; done
TOKEN=$(curl -sf -u "bench:$CSECRET" -d grant_type=client_credentials $BASE/oauth/token | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
entries() { curl -sf $BASE/healthz | sed 's/.*"entries":\([0-9]*\).*/\1/'; }

echo "== $AUDIT audit entries (audited reads)"
DUR_SAVED=$DUR
while [ "$(entries)" -lt "$AUDIT" ]; do
  left=$(( AUDIT - $(entries) ))
  DUR=$(( left / 8000 + 1 )); [ $DUR -gt 60 ] && DUR=60
  wrk_run fill 16 -H "Authorization: Bearer $TOKEN" "$BASE/fhir/Patient/pt-$(printf %07d $((RANDOM % PATIENTS)))" >/dev/null
done
DUR=$DUR_SAVED
N_AUDIT=$(entries)

AGENT="mamori-bench/1.0"
COOKIE=$(python3 scripts/console-session.py $BASE anzen "$PW" 'Zx8$Lm4!qRt-N6' "$SECRET" "$AGENT")
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $COOKIE" -H "User-Agent: $AGENT" $BASE/console/)
[ "$code" = 200 ] || { echo "bench-console: the dashboard answered $code" >&2; exit 1; }
server_ms() { curl -sf $BASE/metrics | awk '/^mamori_http_request_duration_seconds_(sum|count)\{method="GET",route="\/console\/"\}/ { if ($1 ~ /_sum/) s = $2; else c = $2 } END { printf "%.2f %d", (c ? s / c * 1000 : 0), c }'; }

echo "== measuring"
H=$(wrk_run healthz 1 $BASE/healthz)
read -r MS0 C0 <<<"$(server_ms)"
D=$(wrk_run dashboard 1 -H "Cookie: $COOKIE" -H "User-Agent: $AGENT" $BASE/console/)
read -r MS1 C1 <<<"$(server_ms)"
# The mean server time of the measured requests alone (the histogram's sum and count before and after).
SERVER_MEAN=$(curl -sf $BASE/metrics | awk -v c0="$C0" -v m0="$MS0" '/^mamori_http_request_duration_seconds_(sum|count)\{method="GET",route="\/console\/"\}/ { if ($1 ~ /_sum/) s = $2; else c = $2 } END { printf "%.2f", (c > c0 ? (s * 1000 - m0 * c0) / (c - c0) : 0) }')

TABLE=$(cat <<TEOF
Run on $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr);
\`scripts/bench-console.sh $PATIENTS $AUDIT $DUR\`: $PATIENTS patients, $N_AUDIT audit entries, 41 accounts (13 without a second factor);
one request at a time (wrk -t1 -c1 -d${DUR}s), server and load generator on one machine.

| page | requests/s | p50 | p99 | server mean (its /metrics) | goal |
|---|---|---|---|---|---|
| \`GET /healthz\` (baseline) | $(echo "$H" | cut -d'|' -f2) | $(echo "$H" | cut -d'|' -f3) | $(echo "$H" | cut -d'|' -f4) | | |
| \`GET /console/\` security manager's dashboard (signed in) | $(echo "$D" | cut -d'|' -f2) | $(echo "$D" | cut -d'|' -f3) | $(echo "$D" | cut -d'|' -f4) | ${SERVER_MEAN} ms | < 200 ms |

Dashboard p99 ÷ /healthz p99: $(ratio "$(ms "$(echo "$D" | cut -d'|' -f4)")" "$(ms "$(echo "$H" | cut -d'|' -f4)")"); non-2xx: $(echo "$D" | cut -d'|' -f5).
TEOF
)
echo "$TABLE"
if [ -n "${BENCH_FIGURES:-}" ]; then
  echo "FIGURE O3.dashboard_p99_ms $(ms "$(echo "$D" | cut -d'|' -f4)")" >> "$BENCH_FIGURES"
fi
if [ -z "${BENCH_BIN:-}" ] && [ -z "${BENCH_NO_WRITE:-}" ] && grep -q '<!-- CONSOLE:BEGIN -->' BENCHMARKS.md; then
  python3 - "$TABLE" <<'PY'
import sys, re
t = open("BENCHMARKS.md").read()
new = "<!-- CONSOLE:BEGIN -->\n" + sys.argv[1] + "\n<!-- CONSOLE:END -->"
t = re.sub(r"<!-- CONSOLE:BEGIN -->.*?<!-- CONSOLE:END -->", lambda m: new, t, flags=re.S)
open("BENCHMARKS.md", "w").write(t)
PY
fi
