-- Remove a dirty mark only if nobody marked it again since it was read.
-- KEYS[1]: the dirty hash. ARGV[1]: the field, ARGV[2]: the mark read.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
