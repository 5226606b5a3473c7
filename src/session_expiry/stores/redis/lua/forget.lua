-- KEYS: the failures hash, the names by last failure. ARGV: horizon. Forgets the failures
-- last counted at or before it; how many.
local names = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[1]))
for _, name in ipairs(names) do redis.call('HDEL', KEYS[1], name) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[1]))
return #names
