-- Appends changes to an organization's live log (a stream), each at most
-- once: a change is logged when its version is newer than the newest its
-- aggregate has in the log, so that an event delivered twice, or applied
-- again after the projector stopped between its write and this script, is
-- logged once; changes of one aggregate must come in version order.
-- Entries older than the retention, and past the cap, are trimmed, and the
-- id of the newest entry trimmed is kept: a client resuming from an older
-- one has missed entries.
-- KEYS[1]: the log; KEYS[2]: its versions seen (a hash); KEYS[3]: the
-- newest id trimmed; KEYS[4]: the organization's fence (a deleted
-- organization logs nothing).
-- ARGV[1]: retention in milliseconds; ARGV[2]: the cap on entries; then
-- per change: aggregate, version, type, kind, id, data.
-- The log's key is published on rm:changes when entries were added, so
-- that the readers read it at once. Returns the number of entries added.
if redis.call('EXISTS', KEYS[4]) == 1 then
  return 0
end
local retention = tonumber(ARGV[1])
local t = redis.call('TIME')
local minid = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - retention)
local added = 0
-- Changes of one version logged by this call: a creation with samples is
-- two changes of one version, logged together or not at all.
local logged = {}
for i = 3, #ARGV, 6 do
  local seen = tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0')
  local v = tonumber(ARGV[i + 1])
  if v > seen or logged[ARGV[i]] == v then
    logged[ARGV[i]] = v
    redis.call('XADD', KEYS[1], '*',
      't', ARGV[i + 2], 'k', ARGV[i + 3], 'i', ARGV[i + 4], 'v', ARGV[i + 1], 'd', ARGV[i + 5])
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    added = added + 1
  end
end
if added > 0 then
  -- Exact trims, each of the few entries that aged or overflowed since the
  -- last: the newest of them is read first. The backward search for it
  -- runs only once the oldest entry has aged: with none older than its
  -- bound, XREVRANGE starts from the newest entry and reads the whole log
  -- back to its oldest (4 ms a call at 10,000 entries, once per event).
  local newest
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  if #first > 0 and tonumber(string.match(first[1][1], '^%d+')) < tonumber(minid) then
    local old = redis.call('XREVRANGE', KEYS[1], '(' .. minid .. '-0', '-', 'COUNT', 1)
    newest = old[1][1]
    redis.call('XTRIM', KEYS[1], 'MINID', minid)
  end
  local over = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[2])
  if over > 0 then
    local gone = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', over)
    newest = gone[#gone][1]
    redis.call('XTRIM', KEYS[1], 'MAXLEN', ARGV[2])
  end
  if newest then
    redis.call('SET', KEYS[3], newest)
  end
  -- An aggregate quiet for twice the retention has no entry left to
  -- repeat; a redelivery that late is not expected.
  redis.call('PEXPIRE', KEYS[2], 2 * retention)
  redis.call('PUBLISH', 'rm:changes', KEYS[1] .. ' ' .. tostring(redis.call('XLEN', KEYS[1])))
end
return added
