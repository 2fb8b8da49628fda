-- A monitor's alert state: decide a severity change once for every replica, and write it
-- to the monitor's outbox stream in the same atomic step (driven by service/alerts/redis.py).
--
-- KEYS[1]  state hash: severity, seq, started_at, changed_at, candidate, candidate_since
-- KEYS[2]  outbox stream (consumer group `delivery`)
-- ARGV[1]  severity the caller observed: none | notice | warning | critical
-- ARGV[2]  hold seconds: a new severity must be observed this long, on every evaluation
--          since, before it is announced
-- ARGV[3]  cool-down seconds: the least time between two announcements of the monitor
-- ARGV[4]  snapshot: the caller's report (JSON) for the alert body
-- ARGV[5]  stream length bound (approximate MAXLEN)
--
-- Returns {current severity, sequence number of a new alert or 0, stream id or "",
--          decided-at, episode started-at, previous severity} ("" when nothing changed;
--          times as strings, Redis clock).
-- Up or down, a change is announced once it has held for the hold time and the
-- cool-down since the last announcement is over, so a score hovering at a threshold
-- neither pages on every flush nor fires and resolves within milliseconds.

local state_key, outbox_key = KEYS[1], KEYS[2]
local observed = ARGV[1]
local hold = tonumber(ARGV[2])
local cooldown = tonumber(ARGV[3])
-- The order of driftline.core.severity.SEVERITY_RANK (a test checks that they agree).
local rank = {none = 0, notice = 1, warning = 2, critical = 3}
if rank[observed] == nil or hold == nil or cooldown == nil then
  return redis.error_reply('ERR alert.lua: bad severity, hold or cool-down')
end

local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local fields = redis.call('HMGET', state_key,
  'severity', 'candidate', 'candidate_since', 'changed_at', 'started_at')
local current = fields[1] or 'none'
local candidate, since = fields[2], tonumber(fields[3])
local changed_at = tonumber(fields[4])
local quiet = {current, 0, '', '', '', ''}

if observed == current then
  -- Back where it was announced: whatever was pending did not hold.
  if candidate then redis.call('HDEL', state_key, 'candidate', 'candidate_since') end
  return quiet
end
if candidate ~= observed or not since then
  since = now
  redis.call('HSET', state_key, 'candidate', observed,
    'candidate_since', string.format('%.6f', now))
end
if now - since < hold then return quiet end
if changed_at and now - changed_at < cooldown then return quiet end

local seq = redis.call('HINCRBY', state_key, 'seq', 1)
local at = string.format('%.6f', now)
local started = fields[5]
if current == 'none' or not started then started = at end
redis.call('HSET', state_key, 'severity', observed, 'changed_at', at, 'started_at', started)
redis.call('HDEL', state_key, 'candidate', 'candidate_since')
local id = redis.call('XADD', outbox_key, 'MAXLEN', '~', ARGV[5], '*',
  'seq', seq, 'severity', observed, 'previous', current,
  'at', at, 'started_at', started, 'snapshot', ARGV[4])
return {observed, seq, id, at, started, current}
