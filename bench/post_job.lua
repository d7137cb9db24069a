-- wrk script of bench/gateway.py: POST /v1/jobs {"source": {"key": KEY}}, a different upload
-- key per request.
--
--   wrk -t T -c C -d 10s -s bench/post_job.lua URL -- KEYS_FILE T [wrap]
--
-- KEYS_FILE holds one upload key a line; thread i (0-based) takes lines i, i+T, i+2T, ... With
-- `wrap` a thread starts its keys over when they run out (the bare floor checks no ticket);
-- without, a thread that runs out stops and counts it in `exhausted` (vidstream would refuse a
-- key used twice, so the run is flagged). Every answer other than 202 is counted in `non202`.
-- `done` prints one line, `WRK_RESULT {...}`, with the totals and latency percentiles (µs).

local threads = {}

function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path, count = args[1], tonumber(args[2])
  wrap = args[3] == "wrap"
  keys, i = {}, 0
  for line in io.lines(path) do
    if i % count == index and line ~= "" then
      keys[#keys + 1] = line
    end
    i = i + 1
  end
  next_key, sent, non202, exhausted = 1, 0, 0, 0
  statuses = {}
  headers = { ["Content-Type"] = "application/json" }
end

function request()
  if next_key > #keys then
    if wrap then
      next_key = 1
    else
      exhausted = exhausted + 1
      wrk.thread:stop()
      return wrk.format("POST", "/v1/jobs", headers, '{"source": {"key": "uploads/exhausted"}}')
    end
  end
  local key = keys[next_key]
  next_key = next_key + 1
  sent = sent + 1
  return wrk.format("POST", "/v1/jobs", headers, '{"source": {"key": "' .. key .. '"}}')
end

function response(status, headers, body)
  if status ~= 202 then
    non202 = non202 + 1
    statuses[tostring(status)] = (statuses[tostring(status)] or 0) + 1
  end
end

function done(summary, latency, requests)
  local sent_all, non202_all, exhausted_all, codes = 0, 0, 0, {}
  for _, thread in ipairs(threads) do
    sent_all = sent_all + thread:get("sent")
    non202_all = non202_all + thread:get("non202")
    exhausted_all = exhausted_all + thread:get("exhausted")
    for code, n in pairs(thread:get("statuses")) do
      codes[#codes + 1] = string.format('["%s", %d]', code, n)
    end
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, '
      .. '"write": %d, "status_errors": %d, "timeout": %d, "non202": %d, "sent": %d, '
      .. '"exhausted": %d, "codes": [%s], "p50_us": %d, "p90_us": %d, "p99_us": %d, '
      .. '"max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, non202_all, sent_all, exhausted_all, table.concat(codes, ", "),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
