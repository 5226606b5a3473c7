-- Shared by the scripts that end sessions. KEYS[1] is the partition's base: every key a
-- script touches begins with it, so all of them hash to its slot.
local base = KEYS[1]

local events = base .. 'events'
-- How long an hour's tally of ends is kept (seconds): the summary reads the last 24 hours.
local TALLY_KEEP = 2 * 86400

-- The stream's consumer group, made before its first entry (every entry is delivered by
-- ``deliver`` in the script that adds it, so '>' there reads just those).
local function ensure_group()
  if redis.call('EXISTS', events) == 0 then
    redis.call('XGROUP', 'CREATE', events, 'notify', '$', 'MKSTREAM')
  end
end

-- End the open session ``key`` at ``now`` for ``reason`` (for its timeout instead, when
-- past its deadline): the data goes, the tombstone stays, the session moves from its
-- user's open sessions to the user's ends, the event goes to the stream.
-- Returns the event's id and the tombstone ({id, key, user, created, last seen, idle
-- deadline, absolute deadline, ip, user agent, ended at, reason}), or nil when it is not
-- open.
local function finish(key, reason, now, keep)
  local session = base .. 's:' .. key
  local f = redis.call('HMGET', session, 'u', 'c', 'i', 'a', 'v', 'l', 'ip', 'ua')
  if not f[5] then return nil end
  local idle, absolute = tonumber(f[3]), tonumber(f[4])
  if now >= math.min(idle, absolute) then
    if absolute <= idle then reason = 'absolute_timeout' else reason = 'idle_timeout' end
  end
  local duration = now - tonumber(f[2])
  redis.call('HDEL', session, 'd', 'v')
  redis.call('HSET', session, 'e', now, 'r', reason)
  redis.call('EXPIRE', session, keep)
  redis.call('ZREM', base .. 'due', key)
  redis.call('ZREM', base .. 'seen', key)
  redis.call('ZREM', base .. 'born', key)
  local member = key .. ':' .. reason .. ':' .. duration .. ':' .. f[1]
  redis.call('ZADD', base .. 'ended', now, member)
  local user = redis.sha1hex(f[1])
  redis.call('SREM', base .. 'u:' .. user, key)
  redis.call('ZADD', base .. 'ue:' .. user, now, member)
  redis.call('EXPIRE', base .. 'ue:' .. user, keep)
  -- The summary's tally: per hour and reason, "<second of the hour> <duration> " each.
  local hour = math.floor(now / 3600)
  local tally = base .. 't:' .. hour .. ':' .. reason
  local entry = (now - hour * 3600) .. ' ' .. duration .. ' '
  if redis.call('APPEND', tally, entry) == #entry then
    redis.call('EXPIRE', tally, TALLY_KEEP)
  end
  ensure_group()  -- after the first write: a full Redis still lets an end go on
  local id = redis.call('XADD', events, '*', 'key', key, 'user', f[1], 'reason', reason,
                        'at', now, 'duration', duration)
  return {id, key, f[1], f[2], f[6], f[3], f[4], f[7] or '', f[8] or '', now, reason}
end

-- Deliver the ``count`` entries this script added to ``consumer``, who tells them and
-- acknowledges them; a process that dies first leaves them pending, for a sweeper.
local function deliver(consumer, count)
  if count > 0 then
    redis.call('XREADGROUP', 'GROUP', 'notify', consumer, 'COUNT', count, 'STREAMS', events,
               '>')
  end
end
