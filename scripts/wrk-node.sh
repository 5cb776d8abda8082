#!/usr/bin/env bash
# Load a running regional node with wrk: client_credentials issuance and
# opaque-token introspection, as docs/benchmarks.md reports them.
#   scripts/wrk-node.sh                 # SQLite (embedded) region eu
#   DATABASE_URL='postgres://postgres@127.0.0.1:5432/test?sslmode=disable&search_path=wrk_bench' scripts/wrk-node.sh
# DUR=3s shortens the runs (default 10s). Needs wrk (apt-get install wrk). Uses 127.0.0.11:8080 (region eu of configs/regions.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/wrklua.sh
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
sed "s|data_dir: ./data|data_dir: $dir/data|" configs/regions.yaml > "$dir/regions.yaml"
if [[ -n "${DATABASE_URL:-}" ]]; then
  python3 - "$dir/regions.yaml" "$DATABASE_URL" <<'PY'
import sys; p, url = sys.argv[1], sys.argv[2]; s = open(p).read()
old = 'database: ""                   # PostgreSQL or MySQL URL; empty: SQLite under data_dir/eu'
assert old in s, "configs/regions.yaml changed: update scripts/wrk-node.sh"
s = s.replace(old, 'database: "%s"' % url, 1)
open(p, 'w').write(s)
PY
fi
go build -o "$dir/bin/" ./cmd/regional
client=$("$dir/bin/regional" clients add --config "$dir/regions.yaml" --region eu --grant-types client_credentials --scopes meridian:introspect --json)
id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["client_id"])' "$client")
secret=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["client_secret"])' "$client")
"$dir/bin/regional" serve --config "$dir/regions.yaml" --region eu 2>"$dir/node.log" &
node=$!
for _ in $(seq 1 50); do curl -sf http://127.0.0.11:8080/readyz >/dev/null && break; sleep 0.2; done
auth=$(printf '%s:%s' "$id" "$secret" | base64 -w0)
token=$(curl -s -u "$id:$secret" -d grant_type=client_credentials http://127.0.0.11:8080/oauth/token | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
# Every answer is checked: a non-2xx status, a body without the expected
# answer or a socket error/timeout fails the run (exit 1). Server CPU per
# request is the node's utime+stime (/proc) over the run / requests.
wrk_lua "grant_type=client_credentials" '"access_token"' "$auth" "$dir/issue.lua"
wrk_lua "token=$token" '"active":true' "$auth" "$dir/introspect.lua"
failed=0
run() { # name script path
  local t0 t1 out line
  t0=$(awk '{print $14 + $15}' "/proc/$node/stat")
  out=$(wrk -t2 -c32 -d${DUR:-10s} -s "$2" "http://127.0.0.11:8080$3")
  t1=$(awk '{print $14 + $15}' "/proc/$node/stat")
  line=$(grep '^RESULT' <<< "$out") || { echo "$out" >&2; failed=1; return; }
  eval "${line#RESULT }"
  printf '== %-28s %8.0f req/s  p50 %6d µs  p99 %6d µs  server CPU %4.0f µs/req  non-2xx %d  wrong body %d  socket errors %d\n' \
    "$1" "$(echo "$requests / ($duration_us / 1000000)" | bc -l)" "$p50_us" "$p99_us" \
    "$(echo "($t1 - $t0) * 1000000 / $(getconf CLK_TCK) / $requests" | bc -l)" "$non2xx" "$bad" "$sockerr"
  (( non2xx + bad + sockerr == 0 )) || failed=1
}
run "client_credentials issuance" "$dir/issue.lua" /oauth/token
run "introspection" "$dir/introspect.lua" /oauth/introspect
if (( failed )); then echo "FAILED: non-2xx responses, wrong bodies or socket errors" >&2; exit 1; fi
