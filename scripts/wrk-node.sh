#!/usr/bin/env bash
# Load a running regional node with wrk: client_credentials issuance and
# opaque-token introspection, as docs/benchmarks.md reports them.
#   scripts/wrk-node.sh                 # SQLite (embedded) region eu
#   DATABASE_URL='postgres://postgres@127.0.0.1:5432/test?sslmode=disable&search_path=wrk_bench' scripts/wrk-node.sh
# Needs wrk (apt-get install wrk). Uses 127.0.0.11:8080 (region eu of configs/regions.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
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
for _ in $(seq 1 50); do curl -sf http://127.0.0.11:8080/readyz >/dev/null && break; sleep 0.2; done
auth=$(printf '%s:%s' "$id" "$secret" | base64 -w0)
token=$(curl -s -u "$id:$secret" -d grant_type=client_credentials http://127.0.0.11:8080/oauth/token | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
lua() { printf 'wrk.method="POST"\nwrk.body="%s"\nwrk.headers["Content-Type"]="application/x-www-form-urlencoded"\nwrk.headers["Authorization"]="Basic %s"\n' "$1" "$auth" > "$2"; }
lua "grant_type=client_credentials" "$dir/issue.lua"
lua "token=$token" "$dir/introspect.lua"
echo "== client_credentials issuance"; wrk -t2 -c32 -d10s -s "$dir/issue.lua" http://127.0.0.11:8080/oauth/token | grep -E 'Requests/sec|Latency'
echo "== introspection";               wrk -t2 -c32 -d10s -s "$dir/introspect.lua" http://127.0.0.11:8080/oauth/introspect | grep -E 'Requests/sec|Latency'
