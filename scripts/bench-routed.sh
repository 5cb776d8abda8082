#!/usr/bin/env bash
# The routed hop as deployed: a trivial Go HTTP server, introspection at the
# issuing region (eu, local) and introspection at another region (us, routed
# to eu by its router), each loaded by wrk, interleaved round by round in one
# run. With a git revision, the same three-way run also covers the regional
# binary built from that revision (a git worktree of this checkout in a temp
# dir), so both trees are measured on the same machine in the same minutes.
#
#   scripts/bench-routed.sh              # the current tree
#   scripts/bench-routed.sh main         # the current tree vs main
#   ROUNDS=5 DUR=3s CONNS=16 scripts/bench-routed.sh HEAD~3
#
# Every response is checked: a non-2xx status, a body without the expected
# answer ("active":true) or a socket error/timeout makes the run FAIL (exit 1).
# Reported per target: p50 of one connection making one call at a time
# (wrk -c1), requests/s at CONNS connections, and server CPU per request
# (utime+stime of the serving processes from /proc, over the throughput run):
# for routed calls the proxying node (us) and the issuing node (eu) apart.
# Needs wrk (apt-get install wrk), python3, curl. SQLite stores.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/wrklua.sh
rev=${1:-}
DUR=${DUR:-3s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-16}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 2; }
dir=$(mktemp -d)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  if [[ -n "$rev" && -d "$dir/src-rev" ]]; then git worktree remove --force "$dir/src-rev" >/dev/null 2>&1 || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT

# The trivial server: reads the body, answers what introspection answers.
mkdir -p "$dir/trivial"
cat > "$dir/trivial/main.go" <<'GO'
package main

import (
	"io"
	"net/http"
	"os"
)

func main() {
	body := []byte(`{"active":true}`)
	_ = http.ListenAndServe(os.Args[1], http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
}
GO
(cd "$dir/trivial" && GOFLAGS= go build -o "$dir/bin/trivial" main.go)

labels=(cur)
go build -o "$dir/cur/" ./cmd/regional
if [[ -n "$rev" ]]; then
  git worktree add --detach "$dir/src-rev" "$rev" >/dev/null 2>&1
  (cd "$dir/src-rev" && go build -o "$dir/rev/" ./cmd/regional)
  labels+=(rev)
fi

base=$((20000 + RANDOM % 20000))
declare -A url pid_eu pid_us
tport=$((base + 9))
"$dir/bin/trivial" "127.0.0.1:$tport" &
pid_trivial=$!
url[trivial]="http://127.0.0.1:$tport/oauth/introspect"

# One federation (eu and us nodes, own data dir and port) per build.
start() { # label port
  local l=$1 p=$2 d="$dir/$1"
  # Each build runs with its own tree's configs/regions.yaml (the schema
  # changes between revisions: a newer file does not load in an older build).
  local src=configs/regions.yaml
  [[ $l == rev ]] && src="$dir/src-rev/configs/regions.yaml"
  python3 - "$src" "$d/regions.yaml" "$d/data" "$p" <<'PY'
import re, sys
src, dst, data, port = sys.argv[1:]
s = open(src).read().replace("data_dir: ./data", "data_dir: " + data)
s = re.sub(r"^(\s*)admin_listen:.*\n", "", s, flags=re.M)
s = s.replace(":8080", ":" + port).replace("port: 8080", "port: " + port)
open(dst, "w").write(s)
PY
  local client id secret
  client=$("$d/regional" clients add --config "$d/regions.yaml" --region eu --grant-types client_credentials --scopes meridian:introspect --json 2>/dev/null)
  id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["client_id"])' "$client")
  secret=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["client_secret"])' "$client")
  "$d/regional" serve --config "$d/regions.yaml" --region eu 2>"$d/eu.log" &
  pid_eu[$l]=$!
  "$d/regional" serve --config "$d/regions.yaml" --region us 2>"$d/us.log" &
  pid_us[$l]=$!
  for host in 127.0.0.11 127.0.0.12; do
    for _ in $(seq 1 100); do curl -sf "http://$host:$p/readyz" >/dev/null && break; sleep 0.1; done
  done
  local token
  token=$(curl -sf -u "$id:$secret" -d grant_type=client_credentials "http://127.0.0.11:$p/oauth/token" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  # The routed call must work before it is measured.
  curl -sf -u "$id:$secret" -d "token=$token" "http://127.0.0.12:$p/oauth/introspect" | grep -q '"active":true' ||
    { echo "routed introspection at us failed for $l" >&2; tail -5 "$d/us.log" >&2; exit 1; }
  url[$l-local]="http://127.0.0.11:$p/oauth/introspect"
  url[$l-routed]="http://127.0.0.12:$p/oauth/introspect"
  printf '%s:%s' "$id" "$secret" | base64 -w0 > "$d/auth"
  echo "token=$token" > "$d/body"
}
i=0
for l in "${labels[@]}"; do start "$l" $((base + i)); i=$((i + 1)); done

for l in "${labels[@]}"; do
  wrk_lua "$(cat "$dir/$l/body")" '"active":true' "$(cat "$dir/$l/auth")" "$dir/$l.lua"
done
cp "$dir/cur.lua" "$dir/trivial.lua"

ticks() { # pids...: utime+stime in clock ticks
  local t=0 p
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}
hz=$(getconf CLK_TCK)
targets=(trivial)
for l in "${labels[@]}"; do targets+=("$l-local" "$l-routed"); done
pids_of() { # target -> "proxy pids|origin pids"
  case $1 in
    trivial) echo "$pid_trivial|" ;;
    *-local) echo "${pid_eu[${1%-local}]}|" ;;
    *-routed) echo "${pid_us[${1%-routed}]}|${pid_eu[${1%-routed}]}" ;;
  esac
}
results="$dir/results"
: > "$results"
failed=0
run() { # target conns
  local t=$1 c=$2 script="$dir/${1%%-*}.lua" pp po a0 b0 out line
  IFS='|' read -r pp po <<< "$(pids_of "$t")"
  a0=$(ticks $pp); b0=0; [[ -n "$po" ]] && b0=$(ticks $po)
  out=$(wrk -t$(( c < 2 ? 1 : 2 )) -c"$c" -d"$DUR" -s "$script" "${url[$t]}")
  local a1 b1=0; a1=$(ticks $pp); [[ -n "$po" ]] && b1=$(ticks $po)
  line=$(grep '^RESULT' <<< "$out") || { echo "$out" >&2; failed=1; return; }
  eval "${line#RESULT }"
  if (( non2xx + bad + sockerr > 0 )); then
    echo "FAILED RUN $t c=$c: non2xx=$non2xx bad=$bad sockerr=$sockerr" >&2; failed=1
  fi
  echo "$t $c $requests $duration_us $p50_us $p99_us $non2xx $bad $sockerr $((a1 - a0)) $((b1 - b0))" >> "$results"
}
for r in $(seq 1 "$ROUNDS"); do
  for t in "${targets[@]}"; do run "$t" 1; run "$t" "$CONNS"; done
  echo "round $r/$ROUNDS done" >&2
done

python3 - "$results" "$hz" "$CONNS" "${labels[@]}" <<'PY'
import statistics, sys
path, hz, conns, labels = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
rows = {}
for line in open(path):
    t, c, req, dur, p50, p99, n2, bad, se, cpu_a, cpu_b = line.split()
    rows.setdefault((t, c), []).append(dict(rps=int(req) / (int(dur) / 1e6), p50=int(p50), p99=int(p99),
        errors=int(n2) + int(bad) + int(se), cpu_a=int(cpu_a) * 1e6 / hz / max(int(req), 1),
        cpu_b=int(cpu_b) * 1e6 / hz / max(int(req), 1), n=int(req)))
med = lambda t, c, k: statistics.median(r[k] for r in rows[(t, c)])
print(f"\n{'target':<14}{'p50 c=1 µs':>12}{'req/s c=' + conns:>14}{'p50 c=' + conns + ' µs':>14}{'CPU µs/req':>12}{'(origin)':>10}{'errors':>8}")
for t in ["trivial"] + [f"{l}-{k}" for l in labels for k in ("local", "routed")]:
    cpu_b = f"{med(t, conns, 'cpu_b'):.0f}" if t.endswith("routed") else ""
    errs = sum(r["errors"] for c in ("1", conns) for r in rows[(t, c)])
    print(f"{t:<14}{med(t, '1', 'p50'):>12.0f}{med(t, conns, 'rps'):>14.0f}{med(t, conns, 'p50'):>14.0f}"
          f"{med(t, conns, 'cpu_a'):>12.0f}{cpu_b:>10}{errs:>8}")
triv = med("trivial", "1", "p50")
print(f"\nmedians of {len(rows[('trivial', '1')])} interleaved rounds; trivial Go server p50 {triv:.0f} µs")
for l in labels:
    hop = med(f"{l}-routed", "1", "p50") - med(f"{l}-local", "1", "p50")
    ratio = med(f"{l}-routed", conns, "rps") / med(f"{l}-local", conns, "rps")
    print(f"{l}: routed p50 - local p50 = {hop:.0f} µs = {hop / triv:.2f}x trivial p50 (target <= 1.5); "
          f"routed/local throughput at {conns} connections = {ratio:.2f} (target >= 0.6)")
if "rev" in labels:
    for k in ("local", "routed"):
        print(f"cur/rev {k}: throughput {med('cur-' + k, conns, 'rps') / med('rev-' + k, conns, 'rps'):.2f}x, "
              f"p50 c=1 {med('cur-' + k, '1', 'p50') / med('rev-' + k, '1', 'p50'):.2f}x")
PY
if (( failed )); then echo "FAILED: some run had non-2xx responses, wrong bodies or socket errors" >&2; exit 1; fi
