-- Store a token's grant, unless the stored one is revoked: a revocation is
-- final, and a grant read from Postgres before it must not undo it.
-- KEYS[1]: the grant. ARGV: revoked ("1" or "0"), ttl seconds, then
-- field/value pairs.
if redis.call('HGET', KEYS[1], 'revoked') == '1' then
  return 0
end
redis.call('DEL', KEYS[1])
local args = {'revoked', ARGV[1]}
for i = 3, #ARGV, 2 do
  args[#args + 1] = ARGV[i]
  args[#args + 1] = ARGV[i + 1]
end
redis.call('HSET', KEYS[1], unpack(args))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
