-- ARGV: now, since (the window's start, excluded), the length buckets' upper edges.
-- {active, started, earliest deadline ('' if none), {hours ago, reason, bucket, count, ...},
--  {length, count, ...}} of the partition.
local now, since = tonumber(ARGV[1]), tonumber(ARGV[2])
local edges = {}
for j = 3, #ARGV do edges[#edges + 1] = tonumber(ARGV[j]) end
local active = redis.call('ZCOUNT', base .. 'due', '(' .. now, '+inf')
local started = redis.call('ZCOUNT', base .. 'started', '(' .. since, '+inf')
local first = redis.call('ZRANGE', base .. 'due', 0, 0, 'WITHSCORES')
local rows = redis.call('ZRANGEBYSCORE', base .. 'ended', '(' .. since, '+inf', 'WITHSCORES')
local groups, lengths = {}, {}
for j = 1, #rows, 2 do
  local reason, length = string.match(rows[j], '^[^:]*:([^:]*):([^:]*):')
  length = tonumber(length)
  local hours = math.min(23, math.max(0, math.floor((now - tonumber(rows[j + 1])) / 3600)))
  local bucket = #edges
  for index, edge in ipairs(edges) do
    if length < edge then bucket = index - 1; break end
  end
  local group = hours .. ':' .. reason .. ':' .. bucket
  groups[group] = (groups[group] or 0) + 1
  lengths[length] = (lengths[length] or 0) + 1
end
local flat_groups, flat_lengths = {}, {}
for group, count in pairs(groups) do
  flat_groups[#flat_groups + 1] = group
  flat_groups[#flat_groups + 1] = count
end
for length, count in pairs(lengths) do
  flat_lengths[#flat_lengths + 1] = length
  flat_lengths[#flat_lengths + 1] = count
end
return {active, started, first[2] or '', flat_groups, flat_lengths}
