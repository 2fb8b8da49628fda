-- A flush's plain append to its window's log: what most calls are under load, alone.
--
-- The same KEYS and ARGV as window.lua (its header says what each is), for a call that
-- only appends: no claims, no pending records, no labels, and no bucket slid out since
-- the caller's last fold (ARGV[15]). Anything else, a malformed call included, is
-- handed on (reply {4, seconds, microseconds}, nothing written) and the caller sends the
-- same call to window.lua, which does the rest of its work or refuses it.
--
-- Why a script of its own: Redis runs a script's whole top level on every call, and a
-- call's cost grows with what it touches. window.lua's set-up before its append costs
-- as much again as the append; this script measured ~25 % less Redis time per event at
-- full load (docs/performance.md).
--
-- Reply: {0, seconds, microseconds} past the deadline (nothing written), as window.lua;
-- {1, seconds, microseconds, -1, late buckets, {}, log length} when appended. A log
-- that would reach FOLD_AT entries is not appended to: window.lua appends and folds.

local W, B, grace, R = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[5])
local deadline, P, C = tonumber(ARGV[6]), tonumber(ARGV[9]), tonumber(ARGV[10])
local N, M, expected = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])
local FOLD_AT, writer, Q = tonumber(ARGV[16]), ARGV[17], tonumber(ARGV[19])
local FIRST = 20
local HANDED_ON = 4

local time = redis.call('TIME')
if not (W and B and grace and R and deadline and P and expected and FOLD_AT)
    or P < 1 or expected <= 0 or C ~= 0 or N ~= 0 or M ~= 0 or Q ~= 0 or #writer ~= 8
    or #ARGV ~= FIRST - 1 + 2 * P then
  return {HANDED_ON, time[1], time[2]}
end
local _, now, last_out, horizon = window_clock(time, W, B, R)
if deadline > 0 and now >= deadline then return {0, time[1], time[2]} end
if last_out ~= expected then return {HANDED_ON, time[1], time[2]} end
local late, incoming = split_deltas(FIRST, P, B, last_out, horizon)
if not late or #incoming == 0 then return {HANDED_ON, time[1], time[2]} end
local length = push_entries(KEYS[2], writer, incoming, horizon + B + W + grace)
if not length then return {HANDED_ON, time[1], time[2]} end
if length >= FOLD_AT then
  -- Taken back (they are the log's tail): window.lua appends them and folds at once.
  redis.call('RPOP', KEYS[2], #incoming)
  return {HANDED_ON, time[1], time[2]}
end
return {1, time[1], time[2], -1, late, {}, length}
