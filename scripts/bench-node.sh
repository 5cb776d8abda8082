#!/usr/bin/env bash
# Issuance and introspection at one regional node, the current tree against
# a git revision built from this checkout (a git worktree in a temp dir),
# loaded by wrk round by round in ONE interleaved run: both binaries serve at
# the same time on their own port and data, and each round loads cur then rev
# (issuance, then introspection). Ratios cur/rev are the result.
#
#   scripts/bench-node.sh 75f78c1                      # SQLite (embedded)
#   PG=1 scripts/bench-node.sh 75f78c1                 # PostgreSQL 127.0.0.1:5432/test
#   ROUNDS=5 DUR=3s CONNS=32 scripts/bench-node.sh 75f78c1
#
# Every response is checked: a non-2xx status, a body without the expected
# answer ("access_token" / "active":true) or a socket error/timeout makes the
# run FAIL (exit 1). Server CPU per request is utime+stime of the node from
# /proc over the run. Needs wrk, python3, curl (and psql for PG=1).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/wrklua.sh
rev=${1:?usage: scripts/bench-node.sh REV}
DUR=${DUR:-3s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 2; }
dir=$(mktemp -d)
schemas=()
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  git worktree remove --force "$dir/src-rev" >/dev/null 2>&1 || true
  for s in "${schemas[@]}"; do psql -q "$PGURL" -c "DROP SCHEMA IF EXISTS $s CASCADE" >/dev/null 2>&1 || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

labels=(cur rev)
go build -o "$dir/cur/" ./cmd/regional
git worktree add --detach "$dir/src-rev" "$rev" >/dev/null 2>&1
(cd "$dir/src-rev" && go build -o "$dir/rev/" ./cmd/regional)

base=$((20000 + RANDOM % 20000))
declare -A url pid
start() { # label port
  local l=$1 p=$2 d="$dir/$1" db=""
  if [[ -n "${PG:-}" ]]; then
    local schema="bench_node_${l}_$$"
    schemas+=("$schema")
    PGOPTIONS="-c client_min_messages=warning" psql -q "$PGURL" -c "DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema" >/dev/null
    db="$PGURL&search_path=$schema"
  fi
  # Each build runs with its own tree's configs/regions.yaml (the schema
  # changes between revisions: a newer file does not load in an older build).
  local src=configs/regions.yaml
  [[ $l == rev ]] && src="$dir/src-rev/configs/regions.yaml"
  python3 - "$src" "$d/regions.yaml" "$d/data" "$p" "$db" <<'PY'
import re, sys
src, dst, data, port, db = sys.argv[1:]
s = open(src).read().replace("data_dir: ./data", "data_dir: " + data)
s = re.sub(r"^(\s*)admin_listen:.*\n", "", s, flags=re.M)
s = s.replace(":8080", ":" + port).replace("port: 8080", "port: " + port)
if db:
    s, n = re.subn(r'database: ""', 'database: "%s"' % db, s, count=1)
    assert n == 1, "no database key in " + src
open(dst, "w").write(s)
PY
  local client id secret
  client=$("$d/regional" clients add --config "$d/regions.yaml" --region eu --grant-types client_credentials --scopes meridian:introspect --json 2>/dev/null)
  id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["client_id"])' "$client")
  secret=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["client_secret"])' "$client")
  "$d/regional" serve --config "$d/regions.yaml" --region eu 2>"$d/eu.log" &
  pid[$l]=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.11:$p/readyz" >/dev/null && break; sleep 0.1; done
  local token
  token=$(curl -sf -u "$id:$secret" -d grant_type=client_credentials "http://127.0.0.11:$p/oauth/token" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  url[$l-issue]="http://127.0.0.11:$p/oauth/token"
  url[$l-introspect]="http://127.0.0.11:$p/oauth/introspect"
  local auth; auth=$(printf '%s:%s' "$id" "$secret" | base64 -w0)
  wrk_lua "grant_type=client_credentials" '"access_token"' "$auth" "$dir/$l-issue.lua"
  wrk_lua "token=$token" '"active":true' "$auth" "$dir/$l-introspect.lua"
}
i=0
for l in "${labels[@]}"; do start "$l" $((base + i)); i=$((i + 1)); done

hz=$(getconf CLK_TCK)
results="$dir/results"
: > "$results"
failed=0
run() { # label kind
  local t="$1-$2" a0 a1 out line
  a0=$(awk '{print $14 + $15}' "/proc/${pid[$1]}/stat")
  out=$(wrk -t2 -c"$CONNS" -d"$DUR" -s "$dir/$t.lua" "${url[$t]}")
  a1=$(awk '{print $14 + $15}' "/proc/${pid[$1]}/stat")
  line=$(grep '^RESULT' <<< "$out") || { echo "$out" >&2; failed=1; return; }
  eval "${line#RESULT }"
  if (( non2xx + bad + sockerr > 0 )); then
    echo "FAILED RUN $t: non2xx=$non2xx bad=$bad sockerr=$sockerr" >&2; failed=1
  fi
  echo "$t $requests $duration_us $p50_us $p99_us $non2xx $bad $sockerr $((a1 - a0))" >> "$results"
}
for r in $(seq 1 "$ROUNDS"); do
  for k in issue introspect; do for l in "${labels[@]}"; do run "$l" "$k"; done; done
  echo "round $r/$ROUNDS done" >&2
done

python3 - "$results" "$hz" "$CONNS" "${PG:+postgres}" <<'PY'
import statistics, sys
path, hz, conns = sys.argv[1], int(sys.argv[2]), sys.argv[3]
backend = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] else "sqlite"
rows = {}
for line in open(path):
    t, req, dur, p50, p99, n2, bad, se, cpu = line.split()
    rows.setdefault(t, []).append(dict(rps=int(req) / (int(dur) / 1e6), p50=int(p50), p99=int(p99),
        errors=int(n2) + int(bad) + int(se), cpu=int(cpu) * 1e6 / hz / max(int(req), 1)))
med = lambda t, k: statistics.median(r[k] for r in rows[t])
print(f"\nbackend {backend}, {conns} connections, medians of {len(rows['cur-issue'])} interleaved rounds")
print(f"{'target':<16}{'req/s':>10}{'p50 µs':>10}{'p99 µs':>10}{'CPU µs/req':>12}{'errors':>8}")
for k in ("issue", "introspect"):
    for l in ("cur", "rev"):
        t = f"{l}-{k}"
        print(f"{t:<16}{med(t, 'rps'):>10.0f}{med(t, 'p50'):>10.0f}{med(t, 'p99'):>10.0f}{med(t, 'cpu'):>12.0f}{sum(r['errors'] for r in rows[t]):>8}")
for k in ("issue", "introspect"):
    print(f"cur/rev {k}: throughput {med('cur-' + k, 'rps') / med('rev-' + k, 'rps'):.2f}x, "
          f"CPU per request {med('cur-' + k, 'cpu') / med('rev-' + k, 'cpu'):.2f}x")
PY
if (( failed )); then echo "FAILED: some run had non-2xx responses, wrong bodies or socket errors" >&2; exit 1; fi
