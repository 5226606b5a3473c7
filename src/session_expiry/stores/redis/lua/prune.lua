-- ARGV: horizon (ends at or before it are past retention), start horizon, batch,
-- retention in milliseconds (for the stream, on the server's clock), how long a consumer
-- with nothing pending may stay idle (ms). Deletes up to ``batch`` tombstones past
-- retention; how many. Trims the stream, and forgets the consumers of processes long gone.
local doomed = redis.call('ZRANGEBYSCORE', base .. 'ended', '-inf', tonumber(ARGV[1]),
                          'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(doomed) do
  local key, user = string.match(member, '^([^:]*):[^:]*:[^:]*:(.*)$')
  redis.call('DEL', base .. 's:' .. key)
  redis.call('ZREM', base .. 'ended', member)
  redis.call('ZREM', base .. 'ue:' .. redis.sha1hex(user), member)
end
redis.call('ZREMRANGEBYSCORE', base .. 'started', '-inf', tonumber(ARGV[2]))
-- The stream keeps its entries for ``retention``, and every entry not yet acknowledged.
local events = base .. 'events'
if redis.call('EXISTS', events) == 1 then
  local time = redis.call('TIME')
  local oldest = (tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))
                 - tonumber(ARGV[4])
  local minid = tostring(math.max(oldest, 0))
  local ok, pending = pcall(redis.call, 'XPENDING', events, 'notify')
  if ok and pending[2] then
    local first = tonumber(string.match(pending[2], '^(%d+)'))
    if first < tonumber(minid) then minid = pending[2] end
  end
  redis.call('XTRIM', events, 'MINID', minid)
  if ok then
    for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', events, 'notify')) do
      local info = {}
      for j = 1, #consumer, 2 do info[consumer[j]] = consumer[j + 1] end
      if info['pending'] == 0 and info['idle'] > tonumber(ARGV[5]) then
        redis.call('XGROUP', 'DELCONSUMER', events, 'notify', info['name'])
      end
    end
  end
end
return #doomed
