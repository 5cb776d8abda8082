#!/usr/bin/env bash
# GeoDNS as deployed (`geodns serve` with configs/regions.yaml, every site
# healthy) against three static-zone authoritative servers holding the same
# names and answers: CoreDNS with its file plugin (the Go peer; built once
# from the Go module proxy into ~/.cache/meridian-bench, or COREDNS=path),
# NSD and Knot DNS (Debian packages, one worker per CPU, response rate
# limiting off as in the GeoDNS config), loaded by dnsperf with the same
# query mix, interleaved round by round in one run. Reported per server:
# median queries/s and CPU per query (user + system time of the server's
# processes over the run, from /proc).
#
#   scripts/bench-dns.sh
#   ROUNDS=5 DUR=10 DNSPERF_ARGS="-c 4 -T 2" scripts/bench-dns.sh
#
# Before the load every query of the mix is asked of all three servers and
# their answers (rcode, flags, answer section) must be identical, so the
# static zone is the same zone. (Authority and additional sections may
# differ: CoreDNS's `minimal` also drops the glue of an NS answer; the
# average response size of each server is printed.) A dnsperf run with a lost query, or with an rcode
# other than NOERROR/NXDOMAIN, or with a different NXDOMAIN share than the
# mix has (1 in 13), makes the run FAIL (exit 1).
# Needs go, dnsperf, kdig (knot-dnsutils), nsd, knotd (apt-get install
# dnsperf knot-dnsutils nsd knot); the first run needs the Go module proxy
# for CoreDNS. All traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-10}
ROUNDS=${ROUNDS:-3}
for c in dnsperf kdig nsd knotd; do
  command -v "$c" >/dev/null || { echo "$c not found: apt-get install -y dnsperf knot-dnsutils nsd knot" >&2; exit 2; }
done
dir=$(mktemp -d)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
base=$((20000 + RANDOM % 20000))
hp=$base        # the sites' port (health checks)
declare -A port=([geodns]=$((base + 1)) [nsd]=$((base + 2)) [knot]=$((base + 3)) [coredns]=$((base + 4)))
servers=(geodns coredns nsd knot)
coredns_version=v1.12.4
COREDNS=${COREDNS:-${XDG_CACHE_HOME:-$HOME/.cache}/meridian-bench/coredns-$coredns_version/coredns}
if [[ ! -x $COREDNS ]]; then
  echo "building CoreDNS $coredns_version into $(dirname "$COREDNS") (once)" >&2
  mkdir -p "$(dirname "$COREDNS")"
  GOBIN=$(dirname "$COREDNS") GOFLAGS= go install "github.com/coredns/coredns@$coredns_version"
fi
cpus=$(nproc)

# Every site answers its health check, as in a running federation.
mkdir -p "$dir/health"
cat > "$dir/health/main.go" <<'GO'
package main

import (
	"net/http"
	"os"
)

func main() {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })
	for _, a := range os.Args[2:] {
		go func() { _ = http.ListenAndServe(a, h) }()
	}
	_ = http.ListenAndServe(os.Args[1], h)
}
GO
(cd "$dir/health" && GOFLAGS= go build -o "$dir/bin/health" main.go)
go build -o "$dir/bin/" ./cmd/geodns
addrs=()
for ip in $(grep -oE 'addresses: \[[0-9., ]+\]' configs/regions.yaml | grep -oE '127\.[0-9.]+' | sort -u); do
  [[ $ip == 127.0.0.1 ]] || addrs+=("$ip:$hp")
done
"$dir/bin/health" "${addrs[@]}" &

python3 - configs/regions.yaml "$dir/regions.yaml" "$dir/data" "$hp" "${port[geodns]}" <<'PY'
import re, sys
src, dst, data, hp, dp = sys.argv[1:]
s = open(src).read().replace("data_dir: ./data", "data_dir: " + data)
s = re.sub(r"^(\s*)admin_listen:.*\n", "", s, flags=re.M)
s = s.replace(":8080", ":" + hp).replace("port: 8080", "port: " + hp)
s, n = re.subn(r"listen: 127\.0\.0\.1:5354", "listen: 127.0.0.1:" + dp, s)
assert n == 1, "no dns.listen in " + src
open(dst, "w").write(s)
PY
"$dir/bin/geodns" serve --config "$dir/regions.yaml" 2>"$dir/geodns.log" &
declare -A pid=([geodns]=$!)

# The static zone: what GeoDNS answers a resolver on 127.0.0.1 with every
# site up (eu is 127.0.0.0/8's region).
cat > "$dir/id.localhost.zone" <<'ZONE'
$ORIGIN id.localhost.
$TTL 30
@      IN SOA ns1.id.localhost. hostmaster.id.localhost. 1 3600 600 86400 30
@      IN NS  ns1.id.localhost.
@      IN A   127.0.0.11
ns1    IN A   127.0.0.1
hub    IN A   127.0.0.10
eu     IN A   127.0.0.11
us     IN A   127.0.0.12
ap     IN A   127.0.0.13
eu-dr  IN A   127.0.0.21
us-dr  IN A   127.0.0.22
ap-dr  IN A   127.0.0.23
ZONE
mkdir -p "$dir/nsd" "$dir/knot"
cat > "$dir/nsd/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1@${port[nsd]}
  server-count: $cpus
  username: ""
  chroot: ""
  zonesdir: "$dir"
  database: ""
  pidfile: "$dir/nsd/nsd.pid"
  xfrdfile: "$dir/nsd/xfrd.state"
  zonelistfile: "$dir/nsd/zone.list"
  logfile: "$dir/nsd/nsd.log"
  minimal-responses: yes
  hide-version: yes
  rrl-ratelimit: 0          # response rate limiting off, as dns.rate_limit: 0 in the GeoDNS config
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: id.localhost
  zonefile: id.localhost.zone
CONF
nsd -d -c "$dir/nsd/nsd.conf" 2>"$dir/nsd/stderr" &
pid[nsd]=$!
cat > "$dir/knot/knot.conf" <<CONF
server:
  listen: 127.0.0.1@${port[knot]}
  rundir: "$dir/knot"
  udp-workers: $cpus
  tcp-workers: 1
  background-workers: 1
log:
  - target: "$dir/knot/knot.log"
    any: warning
database:
  storage: "$dir/knot"
template:
  - id: default
    storage: "$dir"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: id.localhost
    file: id.localhost.zone
CONF
knotd -c "$dir/knot/knot.conf" 2>"$dir/knot/stderr" &
pid[knot]=$!
mkdir -p "$dir/coredns"
cat > "$dir/coredns/Corefile" <<CONF
id.localhost:${port[coredns]} {
    bind 127.0.0.1
    file $dir/id.localhost.zone
    minimal
}
CONF
(cd "$dir/coredns" && exec "$COREDNS" -conf Corefile -quiet >"$dir/coredns/stderr" 2>&1) &
pid[coredns]=$!

# The mix of geodns/bench/dnsperf.sh (geodns/bench/queries.txt): the
# steered global host (A, AAAA), region, DR and hub hosts, SOA/NS at the
# apex, a miss (NXDOMAIN), NODATA. 1 query in 13 is a miss.
cp geodns/bench/queries.txt "$dir/queries"

ask() { # server name type: "rcode; flags and answer count; answers sorted"
  local out
  out=$(kdig @127.0.0.1 -p "${port[$1]}" "$2" "$3" +nordflag +noall +answer +header +retry=0 +timeout=1 2>&1) || true
  printf '%s; %s; %s\n' "$(grep -oE 'status: [A-Z]+' <<< "$out" | head -1)" \
    "$(grep -oE '^;; Flags: [a-z ]+; QUERY: [0-9]+; ANSWER: [0-9]+' <<< "$out" | head -1)" \
    "$(grep -vE '^;|^$' <<< "$out" | awk '{$2=""; print}' | sort | tr '\n' '|')"
}
# Wait until all three answer and GeoDNS has seen every site healthy
# (`dns.health.rise` checks), then require identical answers.
ok=0
for _ in $(seq 1 100); do
  same=1
  while read -r name type; do
    a=$(ask geodns "$name" "$type")
    for s in "${servers[@]:1}"; do [[ "$(ask "$s" "$name" "$type")" == "$a" ]] || same=0; done
    [[ $a == "status: "* ]] || same=0
  done < "$dir/queries"
  if (( same )); then ok=1; break; fi
  sleep 0.2
done
if (( ! ok )); then
  echo "the servers answer differently:" >&2
  while read -r name type; do
    for s in "${servers[@]}"; do echo "$s $name $type: $(ask "$s" "$name" "$type" | cut -c1-200)" >&2; done
  done < "$dir/queries"
  for f in "$dir/geodns.log" "$dir/coredns/stderr" "$dir/nsd/stderr" "$dir/knot/stderr"; do tail -n 3 "$f" >&2 || true; done
  exit 1
fi

results="$dir/results"
: > "$results"
failed=0
# ticks: CPU clock ticks (user + system) of a server process and all its
# descendants (NSD answers in forked processes two levels down). A server
# process that exited meanwhile counts 0, so the figure is a lower bound.
ticks() {
  local t=0 p
  for p in $(descendants "$1"); do
    # utime and stime are fields 14 and 15, counted after the command name,
    # which may hold spaces ("nsd: server 1").
    t=$((t + $(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0)))
  done
  echo "$t"
}
descendants() {
  local c
  echo "$1"
  for c in $(pgrep -P "$1" || true); do descendants "$c"; done
}
hz=$(getconf CLK_TCK)
run() { # server
  local out qps lost nx total other size
  # shellcheck disable=SC2086
  local t0 t1
  t0=$(ticks "${pid[$1]}")
  out=$(dnsperf -s 127.0.0.1 -p "${port[$1]}" -d "$dir/queries" -l "$DUR" ${DNSPERF_ARGS:-} 2>&1)
  t1=$(ticks "${pid[$1]}")
  qps=$(awk '/Queries per second/ {print $4}' <<< "$out")
  lost=$(awk '/Queries lost/ {print $3}' <<< "$out")
  total=$(awk '/Queries completed/ {print $3}' <<< "$out")
  nx=$(grep -oE 'NXDOMAIN [0-9]+' <<< "$out" | awk '{print $2}' || true); nx=${nx:-0}
  other=$( (grep 'Response codes' <<< "$out" | grep -oE '[A-Z]+ [0-9]+' | grep -vE '^(NOERROR|NXDOMAIN) ' || true) | wc -l)
  if [[ -z $qps || $lost != 0 || $other != 0 ]] ||
     ! python3 -c "import sys; n,t=map(int,sys.argv[1:]); sys.exit(abs(n/t-1/13) > 0.01)" "$nx" "$total"; then
    echo "FAILED RUN $1: lost=$lost other-rcodes=$other nxdomain=$nx/$total" >&2
    echo "$out" >&2
    failed=1
  fi
  size=$(awk '/Average packet size/ {print $7}' <<< "$out")
  echo "$1 ${qps:-0} ${lost:-?} ${size:-0} $((t1 - t0)) ${total:-0}" >> "$results"
}
for r in $(seq 1 "$ROUNDS"); do
  for s in "${servers[@]}"; do run "$s"; done
  echo "round $r/$ROUNDS done" >&2
done
python3 - "$results" "$hz" <<'PY'
import statistics, sys
rows, size, cpu = {}, {}, {}
hz = int(sys.argv[2])
for line in open(sys.argv[1]):
    s, qps, lost, sz, ticks, total = line.split()
    rows.setdefault(s, []).append(float(qps))
    cpu.setdefault(s, []).append(int(ticks) * 1e6 / hz / max(int(total), 1))
    size[s] = sz
med = {s: statistics.median(v) for s, v in rows.items()}
print(f"\n{'server':<9}{'qps (median)':>13}{'CPU µs/query':>14}{'response B':>12}   runs")
for s in ("geodns", "coredns", "nsd", "knot"):
    print(f"{s:<9}{med[s]:>13,.0f}{statistics.median(cpu[s]):>14.2f}{size[s]:>12}   " + " ".join(f"{q:,.0f}" for q in rows[s]))
mcpu = {s: statistics.median(v) for s, v in cpu.items()}
for s in ("coredns", "nsd", "knot"):
    print(f"geodns / {s} (static zone): {med['geodns'] / med[s]:.2f}x queries/s, "
          f"{mcpu['geodns'] / mcpu[s]:.2f}x CPU per query")
PY
if (( failed )); then echo "FAILED: a run lost queries or answered other rcodes" >&2; exit 1; fi
