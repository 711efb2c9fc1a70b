# Helpers shared by the load scripts (sourced by scripts/bench.sh and scripts/bench-search.sh).
# Each load is wrk against the server on loopback, for DUR seconds.

# wrk_run NAME CONNECTIONS WRK-ARGS… → `name|requests/s|p50|p99|non-2xx|requests`
wrk_run() {
  local name=$1 c=$2; shift 2
  local out; out=$(wrk -t"$(( c < 2 ? c : 2 ))" -c"$c" -d"${DUR}s" --latency "$@")
  local rps p50 p99 errs n
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  errs=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  echo "$name|$rps|$p50|$p99|${errs:-0}|$n"
}

# ms LATENCY → milliseconds (wrk prints 850.00us, 1.20ms, 1.05s, 1.00m).
ms() { awk -v x="$1" 'BEGIN { u = x; sub(/^[0-9.]+/, "", u); v = x + 0; if (u == "us") v /= 1000; else if (u == "s") v *= 1000; else if (u == "m") v *= 60000; printf "%.2f", v }'; }

# ratio A B → A / B to three places.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
