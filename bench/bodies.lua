-- wrk script: POST pre-generated bodies in turn, print a JSON summary at the end.
--
-- Environment: BENCH_BODIES  file with one JSON body per line
--              BENCH_PATH    request path (default /monitor/predict)
--              BENCH_CONTENT_TYPE (default application/json)
-- Every thread reads the file once in init() and pre-formats every request, so
-- request() only returns a prepared string: the generator stays far above the server.
-- A body holding @ID@ gets a new id per request instead (the thread's random prefix
-- and a counter), formatted then: a cycled body would replay its first request's id.

local requests = {}
local templates = {}
local index = 0
local sent = 0
local prefix = ""
local path, headers
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  path = os.getenv("BENCH_PATH") or "/monitor/predict"
  local ctype = os.getenv("BENCH_CONTENT_TYPE") or "application/json"
  local file = assert(io.open(os.getenv("BENCH_BODIES"), "r"))
  headers = { ["Content-Type"] = ctype }
  for line in file:lines() do
    if #line > 0 then
      requests[#requests + 1] = wrk.format("POST", path, headers, line)
      templates[#templates + 1] = line
    end
  end
  file:close()
  -- Threads start at different offsets so they do not send the same sequence.
  index = math.random(#requests) - 1
  prefix = string.format("%x%x", math.random(0x7fffffff), os.time())
end

function request()
  index = index % #requests + 1
  local body = templates[index]
  if string.find(body, "@ID@", 1, true) then
    sent = sent + 1
    return wrk.format("POST", path, headers, (string.gsub(body, "@ID@", prefix .. "-" .. sent)))
  end
  return requests[index]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "p50": %d, "p75": %d, ' ..
    '"p90": %d, "p99": %d, "p999": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
