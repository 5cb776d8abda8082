# Sourced by the load scripts (wrk-node.sh, bench-node.sh, bench-routed.sh).
#
# wrk_lua BODY EXPECT AUTH FILE writes a wrk script that POSTs the form BODY
# with HTTP Basic AUTH (base64), counts every non-2xx answer and every body
# without EXPECT, and prints one line:
#   RESULT requests= duration_us= p50_us= p99_us= non2xx= bad= sockerr=
# A run with any non2xx, bad or sockerr is a failed run.
wrk_lua() {
  cat > "$4" <<LUA
wrk.method = "POST"
wrk.body = "$1"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $3"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) non2xx = 0; bad = 0 end
function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1
  elseif not string.find(body, '$2', 1, true) then bad = bad + 1 end
end
function done(summary, latency, requests)
  local n, b = 0, 0
  for _, t in ipairs(threads) do n = n + t:get("non2xx"); b = b + t:get("bad") end
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d bad=%d sockerr=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), n, b,
    e.connect + e.read + e.write + e.timeout))
end
LUA
}
