-- One monitor layout's sliding window in one Redis string, applied atomically (driven by
-- service/stores/redis.py).
--
-- KEYS[1]  the window key: a string of signed 64-bit integers (BITFIELD i64, big-endian),
--          field k at bytes 8k .. 8k+7, FIELDS = H + R + V + R*V fields in all:
--            0  magic: the width V           1  bucket seconds B        2  ring slots R
--            3  evicted_through: the last_out of the latest eviction scan; no ring slot
--               holds a bucket at or before it
--            4  newest bucket start held (the key expires B + W + grace after it)
--            H .. H+R-1         ring ids: the bucket start each slot holds, 0 = empty
--            H+R .. H+R+V-1     running totals: the sum of every occupied slot
--            H+R+V + r*V + j    ring slot r, element j; bucket b lives in r = (b / B) mod R
--          The key carries the {monitor} hash tag, so in Redis Cluster the script stays on
--          one shard.
-- KEYS[2]  the window's log: a list of deltas appended since the last fold, one entry per
--          bucket: the writer id (ARGV[17]), the bucket start (big-endian i64), then its
--          packed deltas as in ARGV below.
--          Same hash tag. At most FOLD_AT entries; it expires after every bucket it may
--          hold has slid out.
-- ARGV[1]  window seconds W       ARGV[2] bucket seconds B      ARGV[3] width V
-- ARGV[4]  grace seconds added to the TTL                        ARGV[5] ring slots R
-- ARGV[6]  deadline (server epoch seconds, 0 for none): from then on the deltas are
--          refused, because the replica that sent them may have given up waiting and told
--          its clients to retry; applying them now could count those events twice. The
--          replica sets it so that Redis's clock has passed it before the replica answers
--          a failure (docs/durability.md has the argument).
-- ARGV[7]  idempotency slice seconds S    ARGV[8] prefix of the idempotency keys (the
--          slice index is appended; same {monitor} hash tag)
-- ARGV[9]  P, the number of unkeyed delta pairs    ARGV[10] C, the number of claims
-- ARGV[11] prefix of the pending-prediction keys (the slice index is appended; same hash
--          tag)    ARGV[12] their slice seconds L (the label horizon; 1 when unused)
-- ARGV[13] N, the number of pending records to write    ARGV[14] M, labels to consume
-- ARGV[15] 0: fold the log into the window and return the totals; else the last_out
--          (below) of the caller's last fold: append this call's deltas to the log
--          instead, while last_out is still that (no bucket slid out since, so the
--          caller's view of the totals stays exact) and the call has deltas in time and
--          consumes no labels
-- ARGV[16] FOLD_AT, the log's length at which an append folds it at once
-- ARGV[17] the caller's writer id, 8 bytes     ARGV[18] K, the number of entries the
--          caller appended since it last folded the log (-1: unknown)
-- ARGV[19] Q, the number of pairs of the sums of those entries, after the P pairs below
-- ARGV[20..] P pairs of (bucket start, packed deltas): the nonzero elements of the
--          bucket's vector, 12 bytes each: a big-endian u32 element index, a big-endian
--          i64 value. No pairs and no claims: only evict and read. Then Q pairs alike:
--          the sums of the caller's K entries per bucket.
--          Then, with claims, three strings: the claims' 24-byte heads one after another
--          (16-byte key digest, 8-byte request fingerprint); per claim the number of its
--          buckets N >= 1 (u32); per claim N (bucket start i64, events u32); all
--          big-endian. A claim's deltas are among the pairs above, summed with the
--          rest by the replica.
--          Then, with N > 0, one string of N pending records, 34 bytes each: the 16-byte
--          id digest, the bucket start (i64), an 8-byte payload and 2 bytes of scope
--          blocks; and with M > 0, one string of M consumed records, 34 bytes each: the
--          id digest and the 18-byte record the replica read (its labels' counts are
--          among the pairs above).
--
-- Returns {1, TIME seconds, TIME microseconds, totals, {late bucket starts}, outcomes,
-- log length}, where totals is V big-endian i64 packed in one string (the key's totals
-- region, as stored), or "" when the window is empty, or -1 when the deltas were
-- appended (not read);
-- outcomes holds two integers per claim (its events accepted, its events late); the log
-- length is the log's after an append (0 after a fold), so that a replica folds it with
-- its own sums before the script has to, unaided, at FOLD_AT. Past the deadline it
-- returns {0, TIME seconds, TIME microseconds}; when a claim's key is known, {2, TIME
-- seconds, TIME microseconds, {claim number, its record, ...}}; when a consumed record is
-- no longer what the replica read (another label took it meanwhile), {3, TIME seconds,
-- TIME microseconds, {consume numbers}}: all three change nothing.
--
-- Pending predictions (docs/labels.md) live in hashes of one slice of L seconds each
-- (field: id digest, value: the 18-byte record), like the idempotency keys: a record is
-- kept L to 2L. A record is written (HSETNX: never over one already there, or over a
-- consumed one) into the current slice after the window, unless its bucket is late. A
-- consumed record is looked up in the current, then the previous slice, checked against
-- what the replica read before any write, and overwritten with a one-byte tombstone
-- after the window is written, so that a second label for it is told apart.
--
-- Idempotency keys live in hashes of one slice of S seconds each (field: key digest,
-- value: fingerprint and the first outcome's counts), named by the slice index of the
-- server clock and expiring when the next slice ends: a key is remembered for S to 2S.
-- A claim is looked up in the current and the previous slice (two HMGETs); the new keys
-- are recorded (HSET, EXPIREAT) after the window is written and before the reply. A
-- record is the request's fingerprint, then its events accepted and late (u32 each).
-- Without claims nothing of this runs.
--
-- Bucket b is live while b + B > now - W, i.e. b > last_out = the newest bucket start at
-- or before floor(now) - W - B. A bucket is accepted while last_out < b <= last_out + R*B:
-- two buckets in that range never share a ring slot, so a slot that an accepted bucket
-- finds taken by another bucket holds one that has slid out. Later buckets (a replica
-- clock far ahead of the server's) are reported late with the ones that slid out.
--
-- Why a log: adding a flush's deltas to the ring and the totals costs Redis ~1 µs per
-- element in BITFIELD operations and their Lua arguments (~0.9 ms for a flush of 64
-- events of 20 features). An append is TIME and one RPUSH (append.lua runs the plain
-- ones; window_log.lua, loaded in front of both, writes the log); a fold sums any number of
-- entries per bucket and element in Lua first, so the BITFIELD below runs once per fold
-- with one increment per element changed, however many flushes went into it. Replicas
-- fold when they need the totals (a read, labels, or about once a second under load).
-- Summing an entry in Lua costs ~30 µs (unpacking its elements most of it), so a replica
-- sends the sums of its own entries, which it kept as it appended them: the script only
-- parses other replicas' entries, or its own when someone else folded some meanwhile.
--
-- A fold is TIME, LRANGE of the log, one BITFIELD that reads the header and the ring ids
-- of the delta buckets and adds every delta to its slot and to the totals (an INCRBY per
-- element changed), one GETRANGE of the totals region, and DEL of the log.
-- Optimistic: the header and ids are checked afterwards. When a bucket's slot is not yet
-- its own, an eviction is due, or the key is new or damaged, a fix-up runs (up to ~10
-- commands, about once per bucket); it corrects the optimistic increments (they are
-- known: content before = after - delta). A read with an empty log is TIME, LRANGE and
-- one GETRANGE of header, ids and totals; it writes only to evict.
--
-- An entry is acknowledged once appended: it is validated first like any delta, and
-- folded into its bucket whichever replica folds, unless the bucket slid out meanwhile.
--
-- Redis does not roll a failed script back: every check that can fail comes before the
-- first write, and the first write (the optimistic BITFIELD) runs under redis.pcall so
-- that a key of another type heals instead of failing. Counts are integers: the script
-- never sums them in Lua doubles except where the result is known to be below 2^53.

local key = KEYS[1]
local W, B, V = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local grace, R, deadline = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local S, prefix, P, C = tonumber(ARGV[7]), ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10])
local pending_prefix, L = ARGV[11], tonumber(ARGV[12])
local N, M = tonumber(ARGV[13]), tonumber(ARGV[14])
local fold, FOLD_AT = tonumber(ARGV[15]), tonumber(ARGV[16])
local writer, K, Q = ARGV[17], tonumber(ARGV[18]), tonumber(ARGV[19])
local log = KEYS[2]
local FIRST = 20
local CLAIMS = FIRST + 2 * ((P or 0) + (Q or 0))  -- the first argument after the pairs
local TOMBSTONE = '\0'

local function whole(n, min)
  return n ~= nil and n >= min and n % 1 == 0
end
if not (whole(W, 1) and whole(B, 1) and whole(V, 1) and whole(grace, 0) and whole(R, 1)
    and deadline and whole(S, 1) and whole(P, 0) and whole(C, 0) and whole(L, 1)
    and whole(N, 0) and whole(M, 0) and whole(fold, 0) and whole(FOLD_AT, 1)
    and #writer == 8 and whole(K, -1) and whole(Q, 0))
    or R < math.ceil(W / B) + 2
    or #ARGV ~= CLAIMS - 1 + (C > 0 and 3 or 0) + (N > 0 and 1 or 0) + (M > 0 and 1 or 0)
    then
  return redis.error_reply('ERR window.lua: bad window arguments')
end

local F_EVICTED, F_NEWEST = 3, 4
local IDS, TOTALS, SLOTS = H, H + R, H + R + V
local FIELDS = SLOTS + R * V
local TWO32, TWO53 = 4294967296, 9007199254740992
local folded = false  -- whether the log was read into this call's deltas
local appended = 0  -- the log's length after this call
-- unpack() fails past ~8000 values (Lua's C stack), so long BITFIELDs go out in slices.
local MAX_ARGS = 7900

local fmt = string.format

-- Numbers as %d: redis.call formats Lua numbers as floats, which may use an exponent.
-- (Formatting is most of the script's own cost: '#' .. n is 3x slower than fmt('#%d').)
local function int(n)
  return fmt('%d', n)
end

local function negate(s)
  if string.sub(s, 1, 1) == '-' then return string.sub(s, 2) end
  return '-' .. s
end

local function slot_of(b)
  return (b / B) % R
end

-- BITFIELD builder: ops are numbered in send order, which is the order of the replies.
local function batch(protect)
  return {args = {'BITFIELD', key, 'OVERFLOW', 'SAT'}, n = 4, ops = 0, replies = {},
          protect = protect}
end

local function flush(q)
  if q.n == 4 or q.err then
    q.n = 4
    return
  end
  local res
  if q.protect and q.ops_sent == nil then
    -- The first write of the script: an error here (WRONGTYPE, OOM) has written nothing.
    res = redis.pcall(unpack(q.args, 1, q.n))
    if res.err then
      q.err, q.n = res, 4
      return
    end
  else
    res = redis.call(unpack(q.args, 1, q.n))
  end
  q.ops_sent = true
  local out = q.replies
  for i = 1, #res do out[#out + 1] = res[i] end
  q.n = 4
end

local function op(q, name, field, value)
  if q.n + 4 > MAX_ARGS then flush(q) end
  local a, n = q.args, q.n
  a[n + 1], a[n + 2], a[n + 3] = name, 'i64', fmt('#%d', field)
  if value then
    a[n + 4] = value
    q.n = n + 4
  else
    q.n = n + 3
  end
  q.ops = q.ops + 1
  return q.ops
end

-- Subtract a stored i64 (read as hi:i32, lo:u32, exact) from a field. Below 2^53 in
-- magnitude it is one exact double; above, lo and two halves of hi*2^32 each are.
local function subtract(q, field, hi, lo)
  if hi >= -2097152 and hi < 2097152 then
    op(q, 'INCRBY', field, int(-(hi * TWO32 + lo)))
  else
    op(q, 'INCRBY', field, int(-lo))
    op(q, 'INCRBY', field, int(-hi * 2147483648))
    op(q, 'INCRBY', field, int(-hi * 2147483648))
  end
end

local time = redis.call('TIME')
-- For an integral b, b + B > now - W is b > floor(now) - W - B; buckets are aligned.
local sec, now, last_out, horizon = window_clock(time, W, B, R)

if #ARGV >= FIRST and deadline > 0 and now >= deadline then
  return {0, time[1], time[2]}
end

-- Deltas: check their framing before the first write and split off the late ones (never
-- parsed, never written). Their elements are checked where they are summed (a fold), or
-- when the log gives them back; the replica checked them before sending.
local late, incoming = split_deltas(FIRST, P, B, last_out, horizon)
if not late then
  return redis.error_reply('ERR window.lua: bad delta for bucket ' .. tostring(incoming))
end

-- The deltas to write, summed per bucket and element: buckets[k] holds index[k] (element
-- numbers) and value[k] (their sums as %d strings). A sum stays exact below 2^53 in a
-- double; a partial sum about to pass it goes out as an increment of its own.
local buckets, index, value = {}, {}, {}
local seen, acc = {}, {}
local formats = {}

-- Add the packed elements of `packed` from byte `from` on to bucket b's sums; false when
-- one is malformed, and then some of them may have been added: the caller starts over.
local function accumulate(b, packed, from)
  if (#packed - from + 1) % 12 ~= 0 then return false end
  local k = seen[b]
  if not k then
    k = #buckets + 1
    local zeros = {}
    for j = 1, V do zeros[j] = 0 end
    buckets[k], index[k], value[k], seen[b], acc[k] = b, {}, {}, k, zeros
  end
  local a, pos, left = acc[k], from, (#packed - from + 1) / 12
  -- One unpack per chunk of pairs, not per pair; chunks stay within the Lua stack.
  while left > 0 do
    local c = left < 2000 and left or 2000
    local format = formats[c]
    if not format then
      format = '>' .. string.rep('I4i8', c)
      formats[c] = format
    end
    local got = {struct.unpack(format, packed, pos)}
    for m = 1, 2 * c, 2 do
      local j, v = got[m] + 1, got[m + 1]
      if j > V or v >= TWO53 or v <= -TWO53 then return false end
      local t = a[j] + v
      if t >= TWO53 or t <= -TWO53 then
        local ix, n = index[k], #index[k] + 1
        ix[n], value[k][n] = j - 1, fmt('%d', a[j])
        t = v
      end
      a[j] = t
    end
    pos, left = got[2 * c + 1], left - c
  end
  return true
end

-- Each bucket's sums, after any partial sums that went out on their own.
local function summed()
  for k = 1, #buckets do
    local a, ix, vs = acc[k], index[k], value[k]
    for j = 1, V do
      local s = a[j]
      if s ~= 0 then
        local n = #ix + 1
        ix[n], vs[n] = j - 1, fmt('%d', s)
      end
    end
  end
end

-- Claims: their deltas are already among the pairs above (the replica adds them in,
-- betting that their keys are new). Look the keys up: if any is known (a repeat, or
-- another request's key), change nothing and return their records, so that the replica
-- sends the flush again without them; else note the new keys to record.
local outcomes, record = {}, nil
if C > 0 then
  -- Three strings for all claims, each unpacked in chunks (per claim, unpacking and
  -- formatting are most of the cost): `heads`, 24 bytes a claim; `counts`, a u32 per
  -- claim (its buckets N); `spans`, N (bucket start i64, events u32) a claim.
  local at = CLAIMS
  local heads, counts, spans = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  if #heads ~= 24 * C or #counts ~= 4 * C or #spans % 12 ~= 0 then
    return redis.error_reply('ERR window.lua: bad claims')
  end
  local function unpacked(packed, format, size)
    local out, pos = {}, 1
    while pos <= #packed do
      local c = math.min(2000, (#packed - pos + 1) / size)
      local got = {struct.unpack('>' .. string.rep(format, c), packed, pos)}
      pos = table.remove(got)
      for m = 1, #got do out[#out + 1] = got[m] end
    end
    return out
  end
  local n_of, span = unpacked(counts, 'I4', 4), unpacked(spans, 'i8I4', 12)
  local ids = {}
  for c = 1, C do
    ids[c] = string.sub(heads, 24 * c - 23, 24 * c - 8)
  end
  local slice = math.floor(sec / S)
  local here, before = prefix .. int(slice), prefix .. int(slice - 1)
  local found_here, found_before
  if C <= 4000 then
    found_here = redis.call('HMGET', here, unpack(ids))
    found_before = redis.call('HMGET', before, unpack(ids))
  else
    found_here, found_before = {}, {}
    for first = 1, C, 4000 do
      local last = math.min(C, first + 3999)
      local a = redis.call('HMGET', here, unpack(ids, first, last))
      local b = redis.call('HMGET', before, unpack(ids, first, last))
      for m = 1, last - first + 1 do
        found_here[first + m - 1], found_before[first + m - 1] = a[m], b[m]
      end
    end
  end
  local fresh, known, tails, next_span = {}, {}, {}, 1
  record = {key = here, expire = int((slice + 2) * S)}
  for c = 1, C do
    local n = n_of[c]
    local last_span = next_span + 2 * n - 1
    if n < 1 or last_span > #span then
      return redis.error_reply('ERR window.lua: bad claim ' .. int(c))
    end
    local id = ids[c]
    local entry = fresh[id] or found_here[c] or found_before[c]
    if entry then
      known[#known + 1], known[#known + 2] = c, entry
    else
      local accepted, lagging = 0, 0
      for m = next_span, last_span, 2 do
        local b, events = span[m], span[m + 1]
        if b % B ~= 0 then
          return redis.error_reply('ERR window.lua: bad claim ' .. int(c))
        end
        if b <= last_out or b > horizon then
          lagging = lagging + events
        else
          accepted = accepted + events
        end
      end
      -- Most claims count alike (one event, in time): pack each outcome once.
      local both = accepted * TWO32 + lagging
      local tail = tails[both]
      if not tail then
        tail = struct.pack('>I4I4', accepted, lagging)
        tails[both] = tail
      end
      entry = string.sub(heads, 24 * c - 7, 24 * c) .. tail
      fresh[id] = entry
      record[#record + 1], record[#record + 2] = id, entry
      outcomes[#outcomes + 1] = accepted
      outcomes[#outcomes + 1] = lagging
    end
    next_span = last_span + 1
  end
  if next_span ~= #span + 1 then
    return redis.error_reply('ERR window.lua: bad claims')
  end
  if #known > 0 then
    return {2, time[1], time[2], known}
  end
end

-- Pending records to write, and labels to consume: the consumed records must still be
-- what the replica read, else nothing changes and the replica counts without them.
local extra = CLAIMS + (C > 0 and 3 or 0)
local ID_BYTES, RECORD_BYTES = 16, 18
local PAIR = ID_BYTES + RECORD_BYTES
local writes, taken = nil, nil
local function pending_key(s) return pending_prefix .. int(s) end
local label_slice = math.floor(sec / L)
if N > 0 then
  writes = ARGV[extra]
  extra = extra + 1
  if #writes ~= PAIR * N then return redis.error_reply('ERR window.lua: bad pending records') end
end
if M > 0 then
  local packed = ARGV[extra]
  if #packed ~= PAIR * M then return redis.error_reply('ERR window.lua: bad consumed records') end
  local ids = {}
  for m = 1, M do ids[m] = string.sub(packed, PAIR * (m - 1) + 1, PAIR * (m - 1) + ID_BYTES) end
  local here, before = pending_key(label_slice), pending_key(label_slice - 1)
  local stale = {}
  taken = {here = {}, before = {}}
  for first = 1, M, 4000 do
    local last = math.min(M, first + 3999)
    local a = redis.call('HMGET', here, unpack(ids, first, last))
    local b = redis.call('HMGET', before, unpack(ids, first, last))
    for k = 1, last - first + 1 do
      local m = first + k - 1
      local expected = string.sub(packed, PAIR * (m - 1) + ID_BYTES + 1, PAIR * m)
      local found, where = a[k], taken.here
      if not found then found, where = b[k], taken.before end
      if found ~= expected then
        stale[#stale + 1] = m
      else
        where[#where + 1] = ids[m]
        where[#where + 1] = TOMBSTONE
      end
    end
  end
  if #stale > 0 then return {3, time[1], time[2], stale} end
end

-- After the window is written: new pending records (in-time buckets only), tombstones.
local function label_writes()
  if writes then
    local key_now, wrote = pending_key(label_slice), false
    for at = 1, #writes, PAIR do
      local b = struct.unpack('>i8', writes, at + ID_BYTES)
      if not is_late(b, last_out, horizon) then
        redis.call('HSETNX', key_now, string.sub(writes, at, at + ID_BYTES - 1),
          string.sub(writes, at + ID_BYTES, at + PAIR - 1))
        wrote = true
      end
    end
    if wrote then redis.call('EXPIREAT', key_now, int((label_slice + 2) * L)) end
  end
  if taken then
    for name, list in pairs(taken) do
      local key_of = name == 'here' and pending_key(label_slice) or pending_key(label_slice - 1)
      for first = 1, #list, 7000 do
        redis.call('HSET', key_of, unpack(list, first, math.min(#list, first + 6999)))
      end
    end
  end
end

local function totals_string()
  return redis.call('GETRANGE', key, TOTALS * 8, SLOTS * 8 - 1)
end

-- Record the new keys (the window is written by now; nothing can fail after this) and
-- answer. A slice key of another type (not ours) is replaced rather than failing a
-- script that has already counted.
local function reply(totals)
  if folded then redis.call('DEL', log) end
  label_writes()
  if record then
    for first = 1, #record, 7000 do
      local last = math.min(#record, first + 6999)
      local ok = redis.pcall('HSET', record.key, unpack(record, first, last))
      if type(ok) == 'table' and ok.err then
        redis.call('DEL', record.key)
        redis.call('HSET', record.key, unpack(record, first, last))
      end
    end
    redis.call('EXPIREAT', record.key, record.expire)
  end
  return {1, time[1], time[2], totals, late, outcomes, appended}
end

-- Add every live delta to its slot and the totals (after the key was rebuilt or the
-- slot emptied: the optimistic increments are gone).
local function add(q, k)
  local base, ix, vs = SLOTS + slot_of(buckets[k]) * V, index[k], value[k]
  for m = 1, #ix do
    op(q, 'INCRBY', base + ix[m], vs[m])
    op(q, 'INCRBY', TOTALS + ix[m], vs[m])
  end
end

-- A new, expired or damaged key: start the window afresh with the live deltas.
local function rebuild()
  if #buckets == 0 then
    redis.call('DEL', key)
    return reply('')
  end
  local newest = buckets[1]
  for k = 2, #buckets do newest = math.max(newest, buckets[k]) end
  local header = struct.pack('>i8i8i8i8i8', V, B, R, last_out, newest)
  redis.call('SET', key, header .. string.rep('\0', (FIELDS - H) * 8),
    'EXAT', int(newest + B + W + grace))
  local q = batch(false)
  for k = 1, #buckets do
    op(q, 'SET', IDS + slot_of(buckets[k]), int(buckets[k]))
    add(q, k)
  end
  flush(q)
  return reply(totals_string())
end

-- The header matched (evicted = its evicted_through): evict what slid out, give new
-- buckets their slots, correct optimistic increments that landed in a slot not theirs.
local function fixup(evicted)
  if redis.call('STRLEN', key) ~= FIELDS * 8 then return rebuild() end
  local raw = redis.call('GETRANGE', key, IDS * 8, (IDS + R) * 8 - 1)
  local ids = {}
  for r = 0, R - 1 do
    local id = struct.unpack('>i8', raw, r * 8 + 1)
    if id ~= 0 and (id % B ~= 0 or slot_of(id) ~= r) then return rebuild() end
    ids[r + 1] = id
  end

  local q = batch(false)
  local claims, again = {}, {}
  for k, b in ipairs(buckets) do
    local r = slot_of(b)
    local id = ids[r + 1]
    if id ~= b then
      if id == 0 then
        -- An empty slot holds zeros: the increments landed right.
        claims[r + 1] = b
      elseif id <= last_out then
        -- Slid out: it is evicted below, increments included, then added again.
        claims[r + 1] = b
        again[#again + 1] = k
      else
        -- Another live bucket (a replica with another window or clock wrote it): undo.
        local base, ix, vs = SLOTS + r * V, index[k], value[k]
        for m = 1, #ix do
          op(q, 'INCRBY', base + ix[m], negate(vs[m]))
          op(q, 'INCRBY', TOTALS + ix[m], negate(vs[m]))
        end
        late[#late + 1] = b
      end
    end
  end

  local evict, newest = {}, 0
  for r = 0, R - 1 do
    local id = ids[r + 1]
    if id ~= 0 and id <= last_out then
      evict[#evict + 1] = r
      id = 0
    end
    id = claims[r + 1] or id
    ids[r + 1] = id
    if id ~= 0 and (newest == 0 or id > newest) then newest = id end
  end
  if newest == 0 then
    -- Nothing left: drop the key rather than keep a window of zeros alive.
    redis.call('DEL', key)
    return reply('')
  end

  -- Subtracting a slot from the totals and zeroing it touch different fields: the
  -- subtractions may go out after the SETRANGE. Adding back (`again`) may not.
  local zeros = string.rep('\0', V * 8)
  for _, r in ipairs(evict) do
    local first_byte = (SLOTS + r * V) * 8
    local slot = redis.call('GETRANGE', key, first_byte, first_byte + V * 8 - 1)
    for j = 0, V - 1 do
      local hi, lo = struct.unpack('>i4I4', slot, j * 8 + 1)
      if hi ~= 0 or lo ~= 0 then subtract(q, TOTALS + j, hi, lo) end
    end
    redis.call('SETRANGE', key, first_byte, zeros)
    op(q, 'SET', IDS + r, int(ids[r + 1]))
  end
  for slot, b in pairs(claims) do op(q, 'SET', IDS + slot - 1, int(b)) end
  for _, k in ipairs(again) do add(q, k) end
  op(q, 'SET', F_EVICTED, int(math.max(evicted, last_out)))
  op(q, 'SET', F_NEWEST, int(newest))
  flush(q)
  redis.call('EXPIREAT', key, int(newest + B + W + grace))
  return reply(totals_string())
end

-- Append: the in-time deltas go to the log, one entry per bucket, and the window is
-- neither read nor written; the reply's totals are -1 (not read). The log's first entry
-- gives it a lifetime past every bucket it may hold; a log of FOLD_AT entries is folded
-- at once, so that it stays small.
if fold == last_out and #incoming > 0 and M == 0 then
  local expire_at = horizon + B + W + grace
  local length, err = push_entries(log, writer, incoming, expire_at)
  if not length then
    -- The first write of the script: an error here has written nothing. A key of
    -- another type under the log's name is replaced.
    if string.sub(err.err, 1, 9) ~= 'WRONGTYPE' then return err end
    redis.call('DEL', log)
    length = push_entries(log, writer, incoming, expire_at)
  end
  if length < FOLD_AT then
    appended = length
    return reply(-1)
  end
  incoming = {}
end

-- Fold: the log's entries (appended by any replica; buckets that slid out meanwhile are
-- dropped, as eviction would), then this call's deltas. The log is deleted in `reply`,
-- once the window is written.
-- The caller's own entries (those of its writer id) are not parsed when it sends their
-- sums and their count K matches: the caller folded the whole log last and counted every
-- entry it appended since; a fold by anyone else took some, and the count tells. Else its
-- entries are parsed like the others'. A malformed entry (not a replica's: they check
-- every delta) is dropped, and the sums start over without it.
local logged = redis.pcall('LRANGE', log, 0, -1)
if type(logged) == 'table' and logged.err == nil then
  folded = #logged > 0
else
  logged, folded = {}, true  -- not a list: replaced by nothing
end
local mine, own = 0, {}  -- how many of the entries are the caller's, and which
for i, entry in ipairs(logged) do
  if string.sub(entry, 1, 8) == writer then mine, own[i] = mine + 1, true end
end
local summed_own = mine == K
local dropped = {}
local function sum_all()
  for i, entry in ipairs(logged) do
    if not dropped[i] and not (summed_own and own[i]) then
      local b = #entry >= 16 and struct.unpack('>i8', entry, 9)
      if not b or b % B ~= 0 then
        dropped[i] = true
      elseif not is_late(b, last_out, horizon) and not accumulate(b, entry, 17) then
        dropped[i] = true
        return false
      end
    end
  end
  local pairs_to_sum = {}
  for _, d in ipairs(incoming) do pairs_to_sum[#pairs_to_sum + 1] = d end
  if summed_own then
    for i = FIRST + 2 * P, CLAIMS - 1, 2 do
      local b = tonumber(ARGV[i])
      if not b or b % B ~= 0 then
        return redis.error_reply('ERR window.lua: bad sum for bucket ' .. tostring(ARGV[i]))
      end
      if not is_late(b, last_out, horizon) then
        pairs_to_sum[#pairs_to_sum + 1] = {b, ARGV[i + 1]}
      end
    end
  end
  for _, d in ipairs(pairs_to_sum) do
    if not accumulate(d[1], d[2], 1) then
      return redis.error_reply('ERR window.lua: bad delta for bucket ' .. int(d[1]))
    end
  end
  return true
end
local done = sum_all()
while not done do
  buckets, index, value, seen, acc = {}, {}, {}, {}, {}
  done = sum_all()
end
if type(done) == 'table' then return done end
summed()

if #buckets == 0 then
  -- Read (or only late deltas): header, ids and totals in one read.
  local raw = redis.pcall('GETRANGE', key, 0, SLOTS * 8 - 1)
  if type(raw) == 'table' then
    if string.sub(raw.err, 1, 9) == 'WRONGTYPE' then return rebuild() end
    return raw
  end
  if raw == '' then return reply('') end
  if #raw < H * 8 then return rebuild() end
  local magic, bucket, ring, evicted = struct.unpack('>i8i8i8i8', raw)
  if not header_ok(magic, bucket, ring, V, B, R) then return rebuild() end
  if evicted >= last_out and #raw == SLOTS * 8 then
    return reply(string.sub(raw, TOTALS * 8 + 1))
  end
  return fixup(evicted)
end

-- Apply: the optimistic BITFIELD, built with locals (this loop is the script's cost).
local a, n = {'BITFIELD', key, 'OVERFLOW', 'SAT'}, 4
local replies, failed = nil, nil

local function send()
  if n == 4 or failed then return end
  local res
  if replies == nil then
    -- The first write of the script: an error here (WRONGTYPE, OOM) has written nothing.
    res = redis.pcall(unpack(a, 1, n))
    if res.err then
      failed, n = res, 4
      return
    end
    replies = res
  else
    res = redis.call(unpack(a, 1, n))
    local count = #replies
    for i = 1, #res do replies[count + i] = res[i] end
  end
  n = 4
end

for f = 0, H - 1 do
  a[n + 1], a[n + 2], a[n + 3] = 'GET', 'i64', fmt('#%d', f)
  n = n + 3
end
-- Replies come in send order: the header's H, then bucket k's ring id at H + k.
for _, b in ipairs(buckets) do
  if n > MAX_ARGS then send() end
  a[n + 1], a[n + 2], a[n + 3] = 'GET', 'i64', fmt('#%d', IDS + slot_of(b))
  n = n + 3
end
-- Per totals element: the first delta, and any further ones (several buckets in a flush)
-- with their sum, so that the totals take one INCRBY each while the sum is exact.
local first, more, sums = {}, nil, nil
for k = 1, #buckets do
  local ix, vs = index[k], value[k]
  for m = 1, #ix do
    local j = ix[m] + 1
    if first[j] == nil then
      first[j] = vs[m]
    else
      if not more then more, sums = {}, {} end
      local extra = more[j]
      if not extra then
        extra = {}
        more[j], sums[j] = extra, tonumber(first[j])
      end
      extra[#extra + 1] = vs[m]
      local sum = sums[j]
      if sum then
        sum = sum + tonumber(vs[m])
        -- Past 2^53 a double may round: then every delta goes out on its own.
        sums[j] = sum < TWO53 and sum > -TWO53 and sum
      end
    end
  end
end
-- Only the changed totals are touched here: the reply reads the totals region whole
-- afterwards (one GETRANGE), where a GET per unchanged element cost ~1 µs each.
for j = 1, V do
  local s = first[j]
  if s ~= nil then
    if n > MAX_ARGS then send() end
    local field = fmt('#%d', TOTALS + j - 1)
    local extra = more and more[j]
    if extra and sums[j] then
      s, extra = fmt('%d', sums[j]), nil
    end
    a[n + 1], a[n + 2], a[n + 3], a[n + 4] = 'INCRBY', 'i64', field, s
    n = n + 4
    if extra then
      for m = 1, #extra do
        if n > MAX_ARGS then send() end
        a[n + 1], a[n + 2], a[n + 3], a[n + 4] = 'INCRBY', 'i64', field, extra[m]
        n = n + 4
      end
    end
  end
end
for k, b in ipairs(buckets) do
  local base, ix, vs = SLOTS + slot_of(b) * V, index[k], value[k]
  for m = 1, #ix do
    if n > MAX_ARGS then send() end
    a[n + 1], a[n + 2], a[n + 3], a[n + 4] = 'INCRBY', 'i64', fmt('#%d', base + ix[m]), vs[m]
    n = n + 4
  end
end
send()

if failed then
  if string.sub(failed.err, 1, 9) == 'WRONGTYPE' then return rebuild() end
  return failed
end
local r = replies
if not header_ok(r[1], r[2], r[3], V, B, R) then return rebuild() end
if r[F_EVICTED + 1] >= last_out then
  local mine = true
  for k, b in ipairs(buckets) do
    if r[H + k] ~= b then
      mine = false
      break
    end
  end
  if mine then return reply(totals_string()) end
end
return fixup(r[F_EVICTED + 1])
