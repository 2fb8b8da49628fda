-- One monitor's sliding window, applied atomically (driven by service/redis_store.py).
--
-- KEYS[1]  totals key: string, msgpack array = running sum of every live bucket
-- KEYS[2]  index key: sorted set, member = score = bucket start (epoch seconds)
-- KEYS[3]  bucket key prefix: bucket b lives at KEYS[3] .. b (string, msgpack array)
--          Bucket keys are derived here rather than declared because their names depend
--          on the data. They carry the same {monitor} hash tag as KEYS[1..3], so in Redis
--          Cluster they hash to the same slot and the script stays on one shard.
-- ARGV[1]  window seconds W     ARGV[2] bucket seconds B
-- ARGV[3]  vector width         ARGV[4] grace seconds added to every TTL
-- ARGV[5]  deltas: msgpack [b1, {v...}, b2, {v...}, ...], or "" to only evict and read
-- ARGV[6]  deadline (server epoch seconds, 0 for none): past it the deltas are refused,
--          because the replica that sent them has given up waiting and told its clients
--          to retry; applying them now would count those events twice.
--
-- Returns {totals msgpack ("" when the window is empty), TIME seconds, TIME microseconds,
--          {late bucket starts}}.
--
-- Bucket b is live while b + B > now - W. Every read and every decode happens before
-- the first write: Redis does not roll a failed script back, so an error must come
-- before anything was changed. Commands per call are constant in the vector width
-- (whole vectors are read and written with GET/MGET/SET), never one per bin.

local totals_key, index_key, prefix = KEYS[1], KEYS[2], KEYS[3]
local W = tonumber(ARGV[1])
local B = tonumber(ARGV[2])
local width = tonumber(ARGV[3])
local grace = tonumber(ARGV[4])
if not (W and B and width and grace) or W <= 0 or B <= 0 or width < 1 or grace < 0 then
  return redis.error_reply('ERR window.lua: bad window arguments')
end

-- unpack() is bounded by Lua's C stack, so variadic commands go out in slices.
local CHUNK = 1000

local function each_chunk(list, fn)
  for i = 1, #list, CHUNK do
    fn(unpack(list, i, math.min(i + CHUNK - 1, #list)))
  end
end

local function mget(keys)
  local out = {}
  each_chunk(keys, function(...)
    local part = redis.call('MGET', ...)
    for j = 1, #part do out[#out + 1] = part[j] end
  end)
  return out
end

local function unlink(keys)
  each_chunk(keys, function(...) redis.call('UNLINK', ...) end)
end

-- Integers as %d: redis.call formats Lua numbers with %.14g, which would round
-- large values.
local function int(n)
  return string.format('%d', n)
end

local function zeros()
  local v = {}
  for j = 1, width do v[j] = 0 end
  return v
end

-- A stored vector that does not decode to `width` numbers counts as missing, so a
-- corrupt key heals like an expired one instead of failing every later call.
local function decode(blob)
  if not blob then return nil end
  local ok, v = pcall(cmsgpack.unpack, blob)
  if not ok or type(v) ~= 'table' or #v ~= width then return nil end
  for j = 1, width do
    if type(v[j]) ~= 'number' then return nil end
  end
  return v
end

local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
-- Bucket starts are integers, so "b + B <= now - W" is "b <= floor(now - W - B)".
local last_out = math.floor(now - W - B)

local deadline = tonumber(ARGV[6] or '0') or 0
if deadline > 0 and now > deadline and ARGV[5] and ARGV[5] ~= '' then
  return redis.error_reply('ERR window.lua: deadline passed; deltas not applied')
end

-- Deltas: validate everything, merge repeated buckets, split off the late ones.
local delta_b, delta_v, late = {}, {}, {}
if ARGV[5] and ARGV[5] ~= '' then
  local ok, flat = pcall(cmsgpack.unpack, ARGV[5])
  if not ok or type(flat) ~= 'table' or #flat % 2 ~= 0 then
    return redis.error_reply('ERR window.lua: deltas must be a msgpack [bucket, vector, ...] array')
  end
  local pos = {}
  for i = 1, #flat, 2 do
    local b, v = flat[i], flat[i + 1]
    if type(b) ~= 'number' or b % B ~= 0 or type(v) ~= 'table' or #v ~= width then
      return redis.error_reply('ERR window.lua: bad delta for bucket ' .. tostring(b))
    end
    for j = 1, width do
      if type(v[j]) ~= 'number' then
        return redis.error_reply('ERR window.lua: non-numeric delta for bucket ' .. int(b))
      end
    end
    if b <= last_out then
      late[#late + 1] = b
    elseif pos[b] then
      local acc = delta_v[pos[b]]
      for j = 1, width do acc[j] = acc[j] + v[j] end
    else
      delta_b[#delta_b + 1] = b
      delta_v[#delta_v + 1] = v
      pos[b] = #delta_b
    end
  end
end

-- Read phase.
local rebuild = false

local evicted = redis.call('ZRANGEBYSCORE', index_key, '-inf', int(last_out))
local evicted_keys, evicted_v = {}, {}
if #evicted > 0 then
  for i, member in ipairs(evicted) do evicted_keys[i] = prefix .. member end
  local blobs = mget(evicted_keys)
  for i = 1, #blobs do
    local v = decode(blobs[i])
    -- An indexed bucket whose key already expired cannot be subtracted: rebuild.
    if v then evicted_v[#evicted_v + 1] = v else rebuild = true end
  end
end

local totals_blob = redis.call('GET', totals_key)
local totals = decode(totals_blob)
-- Missing totals: a new or emptied window (cheap to sum), or lost state (must be summed).
if not totals then rebuild = true end

local delta_keys, bucket_v = {}, {}
local missing = 0
if #delta_b > 0 then
  for i, b in ipairs(delta_b) do delta_keys[i] = prefix .. int(b) end
  local blobs = mget(delta_keys)
  for i = 1, #blobs do
    local v = decode(blobs[i])
    if not v then
      missing = missing + 1
      v = zeros()
    end
    bucket_v[i] = v
  end
end

if #evicted == 0 and #delta_b == 0 and not rebuild then
  return {totals_blob, time[1], time[2], late}
end

-- Write phase.
if #evicted > 0 then
  unlink(evicted_keys)
  redis.call('ZREMRANGEBYSCORE', index_key, '-inf', int(last_out))
end

if #delta_b > 0 then
  local zargs = {}
  for i, b in ipairs(delta_b) do
    local v, d = bucket_v[i], delta_v[i]
    for j = 1, width do v[j] = v[j] + d[j] end
    redis.call('SET', delta_keys[i], cmsgpack.pack(v), 'EXAT', int(b + B + W + grace))
    zargs[#zargs + 1] = int(b)
    zargs[#zargs + 1] = int(b)
  end
  local added = 0
  each_chunk(zargs, function(...) added = added + redis.call('ZADD', index_key, ...) end)
  -- More keys missing than members new to the index: an indexed bucket lost its key
  -- (expired or corrupt), so the running totals still hold what it used to carry.
  if added < missing then rebuild = true end
end

local newest
if rebuild then
  local members = redis.call('ZRANGE', index_key, 0, -1)
  local keys = {}
  for i, member in ipairs(members) do keys[i] = prefix .. member end
  local blobs = mget(keys)
  local dead_members, dead_keys = {}, {}
  totals = zeros()
  for i = 1, #blobs do
    local v = decode(blobs[i])
    if v then
      for j = 1, width do totals[j] = totals[j] + v[j] end
      newest = tonumber(members[i])
    else
      dead_members[#dead_members + 1] = members[i]
      dead_keys[#dead_keys + 1] = keys[i]
    end
  end
  if #dead_members > 0 then
    each_chunk(dead_members, function(...) redis.call('ZREM', index_key, ...) end)
    unlink(dead_keys)
  end
else
  for _, v in ipairs(evicted_v) do
    for j = 1, width do totals[j] = totals[j] - v[j] end
  end
  for _, d in ipairs(delta_v) do
    for j = 1, width do totals[j] = totals[j] + d[j] end
  end
  local top = redis.call('ZRANGE', index_key, -1, -1, 'WITHSCORES')
  if #top > 0 then newest = tonumber(top[2]) end
end

if not newest then
  -- Empty window: drop the totals so float residue of add/subtract never survives.
  if totals_blob then redis.call('DEL', totals_key) end
  return {'', time[1], time[2], late}
end

-- Totals and index live as long as their newest bucket; buckets expire on their own.
local expire_at = int(newest + B + W + grace)
local packed = cmsgpack.pack(totals)
redis.call('SET', totals_key, packed, 'EXAT', expire_at)
if #delta_b > 0 or rebuild then
  redis.call('EXPIREAT', index_key, expire_at)
end
return {packed, time[1], time[2], late}
