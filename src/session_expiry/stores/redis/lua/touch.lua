-- ARGV: key, now, interval, idle timeout. Moves the idle deadline unless the session was
-- touched less than ``interval`` before ``now``; the record after, or nil if not open.
local key, now = ARGV[1], tonumber(ARGV[2])
local session = base .. 's:' .. key
local f = redis.call('HMGET', session, 'l', 'i', 'a', 'v')
if not f[4] then return nil end
local seen, idle, absolute = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
if now - seen >= tonumber(ARGV[3]) then
  seen, idle = math.max(seen, now), math.max(idle, now + tonumber(ARGV[4]))
  redis.call('HSET', session, 'l', seen, 'i', idle)
  redis.call('ZADD', base .. 'due', math.min(idle, absolute), key)
  redis.call('ZADD', base .. 'seen', seen, key)
end
return redis.call('HMGET', session, 'u', 'c', 'l', 'i', 'a', 'ip', 'ua')
