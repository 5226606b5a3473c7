-- ARGV: key, user, now, idle deadline, absolute deadline, ip, user agent, seconds to keep.
-- 1 if opened, 0 if the key is taken (open or a tombstone: a key is never opened again).
local key, now = ARGV[1], tonumber(ARGV[3])
local idle, absolute = tonumber(ARGV[4]), tonumber(ARGV[5])
local session = base .. 's:' .. key
if redis.call('EXISTS', session) == 1 then return 0 end
redis.call('HSET', session, 'u', ARGV[2], 'c', now, 'l', now, 'i', idle, 'a', absolute,
           'd', '{}', 'v', 0)
if ARGV[6] ~= '' then redis.call('HSET', session, 'ip', ARGV[6]) end
if ARGV[7] ~= '' then redis.call('HSET', session, 'ua', ARGV[7]) end
redis.call('EXPIRE', session, tonumber(ARGV[8]))
redis.call('ZADD', base .. 'due', math.min(idle, absolute), key)
redis.call('ZADD', base .. 'seen', now, key)
redis.call('ZADD', base .. 'born', now, key)
redis.call('ZADD', base .. 'started', now, key)
local index = base .. 'u:' .. redis.sha1hex(ARGV[2])  -- the user's sessions here
redis.call('SADD', index, key)
redis.call('EXPIRE', index, tonumber(ARGV[8]))
return 1
