-- Per-bucket vectors of one monitor layout's window, for the spans a monitor with a
-- rolling reference reads (driven by service/stores/redis.py; window.lua keeps them).
--
-- KEYS[1]  the window key (window.lua describes its fields)
-- ARGV[1]  width V    ARGV[2] bucket seconds B    ARGV[3] ring slots R
-- ARGV[4..] per span two whole numbers of seconds back, `after` and `upto`: the span
--          holds the buckets cut(after) < b <= cut(upto), where cut(x) is the newest
--          bucket start at or before floor(now) - x - B (`upto` < 0: ahead of the clock)
--
-- Returns {TIME seconds, TIME microseconds, {ids, slots} per span}: the ring ids (i64
-- each) and the slots (V i64 each) of every ring slot the span's buckets map to, in ring
-- order. A slot may hold another bucket (one that slid out and is not yet evicted): the
-- replica leaves it out by its id. Empty strings when the key is missing or holds
-- another layout. Reads only: eviction is window.lua's.

local V, B, R = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local key = KEYS[1]
local IDS, SLOTS = H, H + R + V
local time = redis.call('TIME')
local sec = tonumber(time[1])
local raw = redis.pcall('GETRANGE', key, 0, H * 8 - 1)
local ok = type(raw) == 'string' and #raw == H * 8
if ok then
  local magic, bucket, ring = struct.unpack('>i8i8i8', raw)
  ok = header_ok(magic, bucket, ring, V, B, R)
end

local function cut(back)
  local edge = sec - back - B
  return edge - edge % B
end

local out = {time[1], time[2]}
for i = 4, #ARGV, 2 do
  local ids, slots = {}, {}
  if ok then
    local first = cut(tonumber(ARGV[i])) + B
    local count = math.min(R, (cut(tonumber(ARGV[i + 1])) - first) / B + 1)
    local r = (first / B) % R
    while count > 0 do
      local run = math.min(count, R - r)
      ids[#ids + 1] = redis.call('GETRANGE', key, (IDS + r) * 8, (IDS + r + run) * 8 - 1)
      slots[#slots + 1] = redis.call('GETRANGE', key, (SLOTS + r * V) * 8,
        (SLOTS + (r + run) * V) * 8 - 1)
      count, r = count - run, 0
    end
  end
  out[#out + 1] = {table.concat(ids), table.concat(slots)}
end
return out
