-- The bench's wrk script (comparison 5 in bench/README.md).
--
-- wrk cannot go through a proxy, so the bench points wrk at the proxy's
-- port and this script turns every request into a proxy request: its
-- request line carries the absolute URI given as the script's argument,
-- and Host names the origin.
--
--   wrk -t2 -c32 -d10s -s wrkproxy.lua http://127.0.0.1:PROXY/ http://127.0.0.1:ORIGIN/page.html
--
-- An origin server accepts the absolute form too, so the same script
-- measures the origin directly. When wrk is done the script prints one
-- JSON line: the request count, the run's length, the bytes read, wrk's
-- error counts (errors_status counts responses with a status of 400 or
-- more: wrk's "Non-2xx or 3xx responses") and latency percentiles, all
-- times in microseconds.

function init(args)
  local url = args[1]
  local host = url and url:match("^http://([^/]+)/")
  if not host then
    error("wrkproxy.lua needs an absolute http:// URL as its argument")
  end
  wrk.path = url
  wrk.headers["Host"] = host
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d,' ..
    '"latency_p50_us":%d,"latency_p99_us":%d,"latency_max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
