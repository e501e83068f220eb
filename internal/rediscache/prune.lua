-- Delete a factory's history segments that its manifest does not list,
-- with the manifest's word checked at the moment of deleting: a segment
-- a newer manifest lists is kept, whoever asked.
-- KEYS[1]: the manifest; KEYS[2]: the index of the segments; then the
-- candidate segment keys. ARGV: each candidate's start as the manifest
-- writes it ("h" or the time).
-- Deletions are published on rm:changes (rediscache.ChangesChannel) as
-- "key -1". Returns how many keys it deleted.
local listed = ''
if redis.call('HEXISTS', KEYS[1], 'd') == 0 then
  listed = '\n' .. (redis.call('HGET', KEYS[1], 'b') or '')
end
local gone = {}
for k = 3, #KEYS do
  if not string.find(listed, '\n' .. ARGV[k - 2] .. ' ', 1, true) then
    if redis.call('DEL', KEYS[k]) == 1 then
      gone[#gone + 1] = KEYS[k] .. ' -1'
    end
    redis.call('SREM', KEYS[2], KEYS[k])
  end
end
if #gone > 0 then
  redis.call('PUBLISH', 'rm:changes', table.concat(gone, '\n'))
end
return #gone
