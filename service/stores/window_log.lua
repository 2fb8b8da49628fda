-- The window's header and its log, as the window's scripts read and write them: the
-- driftline service loads each script with this file in front (Redis scripts cannot
-- call each other). window.lua's header says what the fields, the log and the
-- arguments are.

-- The header's fields (i64 each): width V, bucket seconds B, ring slots R,
-- evicted_through, newest bucket.
local H = 5

-- Whether a header's first three fields say the key holds a window of this layout.
local function header_ok(magic, bucket, ring, V, B, R)
  return magic == V and bucket == B and ring == R
end

-- Whether bucket `b` is outside the range the server's clock accepts (window_clock).
local function is_late(b, last_out, horizon)
  return b <= last_out or b > horizon
end

-- The server's time, and the bucket range it accepts: last_out < b <= horizon.
local function window_clock(time, W, B, R)
  local sec = tonumber(time[1])
  local out = sec - W - B
  local last_out = out - out % B
  return sec, sec + tonumber(time[2]) / 1000000, last_out, last_out + R * B
end

-- The `pairs` (bucket start, packed deltas) pairs from ARGV[first] on: the late buckets,
-- and the in-time ones with deltas as {b, packed}; nil and the argument when one is
-- malformed. The elements are checked where they are summed (a fold).
local function split_deltas(first, pairs, B, last_out, horizon)
  local late, incoming = {}, {}
  for i = first, first + 2 * pairs - 1, 2 do
    local b, packed = tonumber(ARGV[i]), ARGV[i + 1]
    if not b or b % B ~= 0 or #packed % 12 ~= 0 then return nil, ARGV[i] end
    if is_late(b, last_out, horizon) then
      late[#late + 1] = b
    elseif #packed > 0 then
      incoming[#incoming + 1] = {b, packed}
    end
  end
  return late, incoming
end

-- Append the in-time deltas to the log, an entry per bucket (writer id, bucket start as
-- a big-endian i64, packed deltas). Returns the log's length, or nil and Redis's error
-- when the key under the log's name is not a list (nothing was written then). The
-- log's first entry gives it a lifetime past every bucket it may hold.
local function push_entries(log, writer, incoming, expire_at)
  local entries = {}
  for i, d in ipairs(incoming) do entries[i] = writer .. struct.pack('>i8', d[1]) .. d[2] end
  local length = redis.pcall('RPUSH', log, unpack(entries))
  if type(length) == 'table' then return nil, length end
  if length == #entries then
    redis.call('EXPIREAT', log, string.format('%d', expire_at))
  end
  return length
end
