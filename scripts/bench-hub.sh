#!/usr/bin/env bash
# The hub's bucket layout against a naive one-key-per-user layout
# (BenchmarkLookupVsNaive in lookup/redisstore) on the machine's Redis:
# ROUNDS separate runs, so the two layouts alternate (go test -count would
# run every repetition of one before the other), then per run and as a
# median: buckets/naive lookups/s and buckets/naive Redis CPU per lookup,
# for each batch size, and each layout's bytes per user.
#
#   scripts/bench-hub.sh
#   ROUNDS=5 USERS=1000000 scripts/bench-hub.sh
#   NAIVE_DB=9 scripts/bench-hub.sh      # both layouts in the test database
#
# Redis comes from REDIS_URL or REDIS_ADDR/REDIS_DB (default
# 127.0.0.1:6379, db 9); the naive layout goes to the next database unless
# NAIVE_DB names one. Every key is written under a fresh prefix and deleted
# at the end. A lookup that misses fails the run (exit 1). Needs go and
# python3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
BENCHTIME=${BENCHTIME:-2s}
export MERIDIAN_LOOKUP_COMPARE_USERS=${USERS:-100000}
if [[ -n ${NAIVE_DB:-} ]]; then export MERIDIAN_LOOKUP_NAIVE_DB=$NAIVE_DB; fi
out=$(mktemp)
trap 'rm -f "$out" "$out.test" "$out.run"' EXIT
go test -c -o "$out.test" ./lookup/redisstore/
for r in $(seq 1 "$ROUNDS"); do
  if ! "$out.test" -test.run '^$' -test.bench LookupVsNaive -test.benchtime "$BENCHTIME" \
    -test.count 1 -test.timeout 30m >"$out.run" 2>&1; then
    cat "$out.run" >&2
    echo "FAIL: round $r" >&2
    exit 1
  fi
  grep '^BenchmarkLookupVsNaive' "$out.run" | sed "s/^/round=$r /" >>"$out"
  echo "round $r/$ROUNDS done" >&2
done
python3 - "$out" "$MERIDIAN_LOOKUP_COMPARE_USERS" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r'round=(\d+) BenchmarkLookupVsNaive/layout=(\S+)/batch=(\d+)\S*\s+\d+\s+(.*)', line)
    if not m:
        continue
    rnd, layout, batch, rest = int(m[1]), m[2], int(m[3]), m[4]
    metrics = {unit: float(v) for v, unit in re.findall(r'([\d.]+) (\S+)', rest)}
    rows.setdefault(batch, {}).setdefault(rnd, {})[layout] = metrics
print(f"\n{sys.argv[2]} users; buckets / naive-GET per round, then the median")
print(f"{'batch':>6}  {'lookups/s ratio':<40} {'median':>7}   {'Redis CPU/lookup ratio':<40} {'median':>7}")
for batch in sorted(rows, reverse=True):
    thr, cpu = [], []
    for rnd in sorted(rows[batch]):
        b, n = rows[batch][rnd]['buckets'], rows[batch][rnd]['naive-GET']
        thr.append(b['lookups/s'] / n['lookups/s'])
        if 'redis-µs/lookup' in b and n.get('redis-µs/lookup'):
            cpu.append(b['redis-µs/lookup'] / n['redis-µs/lookup'])
    fmt = lambda xs: ' '.join(f'{x:.2f}' for x in xs)
    med = lambda xs: f'{statistics.median(xs):.2f}x' if xs else '-'
    print(f"{batch:>6}  {fmt(thr):<40} {med(thr):>7}   {fmt(cpu):<40} {med(cpu):>7}")
some = next(iter(next(iter(rows.values())).values()))
print(f"bytes/user: buckets {some['buckets']['B/user']:.1f}, naive {some['naive-GET']['B/user']:.1f} "
      f"({some['naive-GET']['B/user'] / some['buckets']['B/user']:.1f}x smaller)")
PY
