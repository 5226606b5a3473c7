-- ARGV: now, batch, consumer, seconds to keep a tombstone. Ends up to ``batch`` overdue
-- sessions of the partition: {how many were due, event, event, ...}.
local now, consumer, keep = tonumber(ARGV[1]), ARGV[3], tonumber(ARGV[4])
local due = redis.call('ZRANGEBYSCORE', base .. 'due', '-inf', now, 'LIMIT', 0,
                       tonumber(ARGV[2]))
local out = {#due}
for _, key in ipairs(due) do
  local event = finish(key, 'idle_timeout', now, keep)
  if event then
    out[#out + 1] = event
  else  -- gone by itself (its safety expiry): nothing left to end or tell
    redis.call('ZREM', base .. 'due', key)
  end
end
deliver(consumer, #out - 1)
return out
