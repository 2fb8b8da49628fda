-- Several windows read where nothing is due, in one call (driven by service/stores/redis.py
-- on a single Redis; in Redis Cluster the keys would cross slots). window.lua describes
-- a window's fields and its log.
--
-- KEYS     per window: its key, then its log's key
-- ARGV[1]  per window, 16 bytes: window seconds W, bucket seconds B, width V and ring
--          slots R, each a big-endian u32
--
-- Returns {TIME seconds, TIME microseconds, then per window its totals (V big-endian i64
-- packed in one string, as stored; "" when there is no window), or 0 when window.lua
-- must read it: its log holds entries, a bucket is due to slide out, or the key is not a
-- window of this layout}. Reads only: folding, eviction and repairs are window.lua's.

if #ARGV ~= 1 or #KEYS % 2 ~= 0 or #ARGV[1] ~= 8 * #KEYS then
  return redis.error_reply('ERR read.lua: bad arguments')
end
local time = redis.call('TIME')
local out = {time[1], time[2]}
for i = 1, #KEYS / 2 do
  local key, log = KEYS[2 * i - 1], KEYS[2 * i]
  local W, B, V, R = struct.unpack('>I4I4I4I4', ARGV[1], 16 * (i - 1) + 1)
  local _, _, last_out = window_clock(time, W, B, R)
  local result = 0
  if redis.pcall('LLEN', log) == 0 then
    local head = redis.pcall('GETRANGE', key, 0, H * 8 - 1)
    if head == '' then
      result = ''
    elseif type(head) == 'string' and #head == H * 8 then
      local magic, bucket, ring, evicted = struct.unpack('>i8i8i8i8', head)
      if header_ok(magic, bucket, ring, V, B, R) and evicted >= last_out then
        local totals = redis.call('GETRANGE', key, (H + R) * 8, (H + R + V) * 8 - 1)
        if #totals == V * 8 then result = totals end
      end
    end
  end
  out[i + 2] = result
end
return out
