-- A monitor's drift history: write one bucket's verdict record into its ring slot,
-- once for every replica (driven by service/stores/redis_history.py).
--
-- KEYS[1]  ring string: SLOTS records of fixed size, slot = (bucket / bucket seconds) mod SLOTS
-- ARGV[1]  the record; its first 8 bytes are its bucket start (big-endian signed integer)
-- ARGV[2]  slot index (0-based)
-- ARGV[3]  slots in the ring
-- ARGV[4]  lifetime of the ring in seconds (the horizon and a grace), renewed by each write
--
-- Returns 1 when the record was written, 0 when the slot already holds this bucket or a
-- later one (another replica closed the bucket first, or this record is stale).
-- The ring is allocated whole when created, so its memory is fixed from the first write.

local key, record = KEYS[1], ARGV[1]
local slot, slots, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local size = #record
if slot == nil or slots == nil or ttl == nil or size < 8 or slot < 0 or slot >= slots then
  return redis.error_reply('ERR history.lua: bad slot, slots, lifetime or record')
end
local length = redis.call('STRLEN', key)
if length ~= size * slots then
  -- Absent, or written for another record size (cannot happen under one name): start over.
  if length > 0 then redis.call('DEL', key) end
  redis.call('SETRANGE', key, size * slots - 1, '\0')
end
local offset = slot * size
local held = struct.unpack('>i8', redis.call('GETRANGE', key, offset, offset + 7))
if held >= struct.unpack('>i8', record) then return 0 end
redis.call('SETRANGE', key, offset, record)
redis.call('EXPIRE', key, ttl)
return 1
