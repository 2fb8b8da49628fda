-- A monitor's alert state: decide a severity change once for every replica, and write it
-- to the monitor's outbox stream in the same atomic step (driven by service/alerts/redis.py).
--
-- KEYS[1]  state hash: severity, seq, started_at, lower_since
-- KEYS[2]  outbox stream (consumer group `delivery`)
-- ARGV[1]  severity the caller observed: none | warning | critical
-- ARGV[2]  cool-down seconds: a lower severity must hold this long before it is announced
-- ARGV[3]  snapshot: the caller's report (JSON) for the alert body
-- ARGV[4]  stream length bound (approximate MAXLEN)
--
-- Returns {current severity, sequence number of a new alert or 0, stream id or "",
--          decided-at, episode started-at, previous severity} ("" when nothing changed;
--          times as strings, Redis clock).
-- Going up is announced at once; going down waits out the cool-down, so a score
-- hovering at a threshold does not page people on every flush.

local state_key, outbox_key = KEYS[1], KEYS[2]
local observed = ARGV[1]
local cooldown = tonumber(ARGV[2])
-- The order of driftline.core.severity.SEVERITY_RANK (a test checks that they agree).
local rank = {none = 0, warning = 1, critical = 2}
if rank[observed] == nil or cooldown == nil then
  return redis.error_reply('ERR alert.lua: bad severity or cool-down')
end

local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local fields = redis.call('HMGET', state_key, 'severity', 'lower_since', 'started_at')
local current = fields[1] or 'none'
local lower_since = tonumber(fields[2])

if observed == current then
  if lower_since then redis.call('HDEL', state_key, 'lower_since') end
  return {current, 0, '', '', '', ''}
end
if rank[observed] < rank[current] and cooldown > 0 then
  if not lower_since then
    redis.call('HSET', state_key, 'lower_since', string.format('%.6f', now))
    return {current, 0, '', '', '', ''}
  end
  if now - lower_since < cooldown then
    return {current, 0, '', '', '', ''}
  end
end

local seq = redis.call('HINCRBY', state_key, 'seq', 1)
local at = string.format('%.6f', now)
local started = fields[3]
if current == 'none' or not started then started = at end
redis.call('HSET', state_key, 'severity', observed, 'changed_at', at, 'started_at', started)
redis.call('HDEL', state_key, 'lower_since')
local id = redis.call('XADD', outbox_key, 'MAXLEN', '~', ARGV[4], '*',
  'seq', seq, 'severity', observed, 'previous', current,
  'at', at, 'started_at', started, 'snapshot', ARGV[3])
return {observed, seq, id, at, started, current}
