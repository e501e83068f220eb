-- Remove dirty marks, each only if nobody marked it again since it was read.
-- KEYS[1]: the dirty hash. ARGV: field, mark read, field, mark read, ...
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    removed = removed + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return removed
