-- Version-guarded replacement of read-model hashes, and dirty marks, in one
-- atomic step.
-- KEYS: the n record keys, then the organization's fence when ARGV[3] is
-- "1", then an index set when ARGV[4] is "1", then (when marks follow) the
-- dirty-marks hash.
-- ARGV[1]: the rule; ARGV[2]: n; ARGV[3]: whether a fence is given; ARGV[4]:
-- whether an index is given; then per record key: version, expected, f,
-- then f field/value pairs; then the names to mark dirty.
-- The index, when given, gets every record key that exists afterwards (written
-- or holding a newer version), so that its keys can be found again without
-- guessing their names (a factory's chart buckets).
-- A record whose f is -1 was staged: its fields wait in a hash of their own,
-- named among the last KEYS (after the marks hash, in record order), so that
-- a large value never passes through Lua (a 4 MB argument costs Redis 5 ms
-- before the script even runs). A write renames that hash over the key;
-- otherwise it is deleted.
-- A fenced (deleted) organization gets -2 for every key and no marks.
-- The keys written, with their versions, are published on rm:changes
-- (rediscache.ChangesChannel) as lines "key version": the readers' feed,
-- sent exactly when the writes commit.
-- Per record key the result is 1 (written), 0 (the key already holds this
-- version or a newer one: dropped) or -1 (the rule refused it):
--   next : write when the stored version is version-1 (a missing key is 0);
--          -1 means a gap: events were missed.
--   newer: write when the stored version is at most version.
--   exact: write when the stored version is expected; -1 means someone else
--          wrote in between and the caller must read again.
--   all  : exact for every record, or none written: 0 for every record when
--          one already holds its version or a newer one, else -1 for every
--          record when one holds another version than expected.
local rule = ARGV[1]
local n = tonumber(ARGV[2])
local fenced = ARGV[3] == '1'
local indexed = ARGV[4] == '1'
local staged, s = {}, 0
do
  local i = 5
  for k = 1, n do
    local f = tonumber(ARGV[i + 2])
    if f < 0 then
      s = s + 1
      staged[k] = s
      i = i + 3
    else
      i = i + 3 + 2 * f
    end
  end
end
local function stagedKey(k) return KEYS[#KEYS - s + staged[k]] end
local extra = n + 1
if fenced then
  extra = extra + 1
  if redis.call('EXISTS', KEYS[n + 1]) == 1 then
    local out = {}
    for k = 1, n do
      out[k] = -2
      if staged[k] then redis.call('DEL', stagedKey(k)) end
    end
    return out
  end
end
if rule == 'all' then
  -- Exact for every record, or nothing at all: when a key already holds
  -- its record's version or a newer one, the write was made (0 for all);
  -- when a key holds anything but what was expected, someone else wrote
  -- in between (-1 for all).
  local i, result = 5, 1
  for k = 1, n do
    local cur = tonumber(redis.call('HGET', KEYS[k], 'v') or '0')
    if cur >= tonumber(ARGV[i]) then
      result = 0
    elseif cur ~= tonumber(ARGV[i + 1]) and result == 1 then
      result = -1
    end
    i = i + 3 + 2 * math.max(tonumber(ARGV[i + 2]), 0)
  end
  if result ~= 1 then
    local out = {}
    for k = 1, n do
      out[k] = result
      if staged[k] then redis.call('DEL', stagedKey(k)) end
    end
    return out
  end
  rule = 'exact'
end
local index
if indexed then
  index = KEYS[extra]
  extra = extra + 1
end
local i = 5
local out = {}
local changed = {}
for k = 1, n do
  local version = tonumber(ARGV[i])
  local expected = tonumber(ARGV[i + 1])
  local f = tonumber(ARGV[i + 2])
  local cur = tonumber(redis.call('HGET', KEYS[k], 'v') or '0')
  local write = false
  if rule == 'next' then
    if cur >= version then out[k] = 0 elseif cur == version - 1 then write = true else out[k] = -1 end
  elseif rule == 'newer' then
    if cur <= version then write = true else out[k] = 0 end
  elseif rule == 'exact' then
    if cur == expected then write = true elseif cur >= version then out[k] = 0 else out[k] = -1 end
  else
    return redis.error_reply('unknown rule ' .. tostring(rule))
  end
  if write then
    changed[#changed + 1] = KEYS[k] .. ' ' .. ARGV[i]
  end
  if write and staged[k] then
    redis.call('RENAME', stagedKey(k), KEYS[k])
    redis.call('PERSIST', KEYS[k])
    out[k] = 1
  elseif staged[k] then
    redis.call('DEL', stagedKey(k))
  elseif write then
    redis.call('DEL', KEYS[k])
    -- HSET in chunks: unpack() of many fields would overflow Lua's stack.
    local j = 0
    while j < f do
      local args = {}
      local last = math.min(f, j + 1000)
      for p = j, last - 1 do
        args[#args + 1] = ARGV[i + 3 + 2 * p]
        args[#args + 1] = ARGV[i + 4 + 2 * p]
      end
      redis.call('HSET', KEYS[k], unpack(args))
      j = last
    end
    out[k] = 1
  end
  i = i + 3 + 2 * math.max(f, 0)
end
for d = i, #ARGV do
  -- A member mark "name|id" also marks the body name itself.
  local sep = string.find(ARGV[d], '|', 1, true)
  if sep then
    redis.call('HINCRBY', KEYS[extra], string.sub(ARGV[d], 1, sep - 1), 1)
  end
  redis.call('HINCRBY', KEYS[extra], ARGV[d], 1)
end
if index then
  for k = 1, n do
    if out[k] >= 0 then redis.call('SADD', index, KEYS[k]) end
  end
end
if #changed > 0 then
  redis.call('PUBLISH', 'rm:changes', table.concat(changed, '\n'))
end
return out
