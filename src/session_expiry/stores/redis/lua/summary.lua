-- ARGV: now, since (the window's start, excluded), the end reasons.
-- {active, started, earliest deadline ('' if none), {hour, reason, tally, ...}, {member, at,
--  ...}} of the partition: the tallies of the hours from the one ``since`` falls in to the
-- one ``now`` falls in (each "<second of the hour> <duration> " per end), and the ends
-- after that hour (a clock behind the enders'), as ``ended`` holds them.
local now, since = tonumber(ARGV[1]), tonumber(ARGV[2])
local active = redis.call('ZCOUNT', base .. 'due', '(' .. now, '+inf')
local started = redis.call('ZCOUNT', base .. 'started', '(' .. since, '+inf')
local first = redis.call('ZRANGE', base .. 'due', 0, 0, 'WITHSCORES')
local tallies = {}
local last = math.floor(now / 3600)
for hour = math.floor(since / 3600), last do
  for j = 3, #ARGV do
    local tally = redis.call('GET', base .. 't:' .. hour .. ':' .. ARGV[j])
    if tally then
      tallies[#tallies + 1] = hour
      tallies[#tallies + 1] = ARGV[j]
      tallies[#tallies + 1] = tally
    end
  end
end
local later = redis.call('ZRANGEBYSCORE', base .. 'ended', (last + 1) * 3600, '+inf',
                         'WITHSCORES')
return {active, started, first[2] or '', tallies, later}
