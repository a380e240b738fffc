-- wrk -s scripts/bench/done.lua: at the end of a run, wrk hands done() the exact
-- counts and latencies (in µs); print them as one JSON line, which
-- scripts/bench/wrk.py reads, rather than parse the rounded, unit-suffixed
-- human output.
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
