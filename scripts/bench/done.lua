-- wrk -s scripts/bench/done.lua: at the end of a run, wrk hands done() the exact
-- counts and latencies (in µs); print them as one JSON line, which
-- scripts/bench/wrk.py reads, rather than parse the rounded, unit-suffixed
-- human output.
-- LOADTEST_HEADER="Name: value" adds that header to every request (an API key
-- for an extension that checks one, say).
local extra = os.getenv("LOADTEST_HEADER")
if extra then
  local name, value = extra:match("^([^:]+):%s*(.*)$")
  if name then wrk.headers[name] = value end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'LOADTEST_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "max_us": %d, "errors": {"connect": %d, ' ..
    '"read": %d, "write": %d, "timeout": %d, "status": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.timeout, e.status))
end
