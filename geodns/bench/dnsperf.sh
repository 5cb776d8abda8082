#!/usr/bin/env bash
# Load-tests the GeoDNS server with dnsperf on loopback and prints queries/s.
#
#   geodns/bench/dnsperf.sh            # 10 s, plain queries
#   ECS=1 geodns/bench/dnsperf.sh      # every query carries ECS 192.0.2.0/24
#   DURATION=30 DNSPERF_ARGS="-c 4 -T 2" geodns/bench/dnsperf.sh
#
# Needs go and dnsperf (apt-get install -y dnsperf). All traffic stays on
# 127.0.0.1; the server exits with the script.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
duration="${DURATION:-10}"
command -v dnsperf >/dev/null || { echo "dnsperf not found: apt-get install -y dnsperf" >&2; exit 1; }

tmp="$(mktemp -d)"
pid=""
cleanup() {
	if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT

(cd "$here" && go build -o "$tmp/geodns-bench" ./cmd/geodns-bench)
"$tmp/geodns-bench" -addr 127.0.0.1:0 -portfile "$tmp/port" &
pid=$!
for _ in $(seq 100); do
	[[ -s "$tmp/port" ]] && break
	kill -0 "$pid" 2>/dev/null || { echo "server exited early" >&2; exit 1; }
	sleep 0.1
done
[[ -s "$tmp/port" ]] || { echo "server did not start" >&2; exit 1; }
port="$(cat "$tmp/port")"

# The query mix (queries.txt): the steered global host (A and AAAA),
# region, DR and hub hosts, SOA/NS at the apex, and misses (NXDOMAIN,
# NODATA). scripts/bench-dns.sh loads the same file.
cp "$here/queries.txt" "$tmp/queries"

extra=()
if [[ "${ECS:-0}" == 1 ]]; then
	# EDNS option 8 (ECS): family 1, source /24, scope 0, 192.0.2.
	extra+=(-E 8:00011800c00002)
fi
# shellcheck disable=SC2086
cmd=(dnsperf -s 127.0.0.1 -p "$port" -d "$tmp/queries" -l "$duration" "${extra[@]}" ${DNSPERF_ARGS:-})
echo "+ ${cmd[*]}" >&2
"${cmd[@]}" | tee "$tmp/out"
qps="$(awk '/Queries per second/ {print $4}' "$tmp/out")"
echo "geodns dnsperf: ${qps} queries/s"
