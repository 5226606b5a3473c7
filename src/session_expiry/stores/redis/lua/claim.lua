-- KEYS: the failures hash, the names by last failure. ARGV: n, then n names, n values as
-- read ('' for none), n values to write ('' to delete). Writes only if every value is still
-- as read (another app server did not claim meanwhile): 1, else 0.
local n = tonumber(ARGV[1])
for j = 1, n do
  local current = redis.call('HGET', KEYS[1], ARGV[1 + j]) or ''
  if current ~= ARGV[1 + n + j] then return 0 end
end
for j = 1, n do
  local name, value = ARGV[1 + j], ARGV[1 + 2 * n + j]
  if value == '' then
    redis.call('HDEL', KEYS[1], name)
    redis.call('ZREM', KEYS[2], name)
  else
    redis.call('HSET', KEYS[1], name, value)
    redis.call('ZADD', KEYS[2], tonumber(string.match(value, ':(%d+)$')), name)
  end
end
return 1
