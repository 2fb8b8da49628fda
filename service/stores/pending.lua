-- Pending predictions of one monitor layout, looked up for their labels (driven by
-- service/stores/redis.py; window.lua writes and consumes them).
--
-- KEYS[1]  the window key: names the monitor's hash slot, so that in Redis Cluster the
--          script runs on the shard holding the pending keys (they share its {monitor} tag)
-- ARGV[1]  prefix of the pending keys (the slice index is appended)
-- ARGV[2]  slice seconds L (the label horizon)
-- ARGV[3]  the id digests, 16 bytes each, one after another
--
-- Returns {TIME seconds, TIME microseconds, records}: per id its record in the current
-- slice, else in the previous one, else false. Reads only.

local prefix, L, packed = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if not L or L < 1 or L % 1 ~= 0 or #packed % 16 ~= 0 then
  return redis.error_reply('ERR pending.lua: bad arguments')
end
local time = redis.call('TIME')
local slice = math.floor(tonumber(time[1]) / L)
local here = prefix .. string.format('%d', slice)
local before = prefix .. string.format('%d', slice - 1)
local ids = {}
for at = 1, #packed, 16 do ids[#ids + 1] = string.sub(packed, at, at + 15) end
local out = {}
for first = 1, #ids, 4000 do
  local last = math.min(#ids, first + 3999)
  local a = redis.call('HMGET', here, unpack(ids, first, last))
  local b = redis.call('HMGET', before, unpack(ids, first, last))
  for k = 1, last - first + 1 do out[first + k - 1] = a[k] or b[k] end
end
return {time[1], time[2], out}
