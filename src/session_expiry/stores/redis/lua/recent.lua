-- ARGV: cursor value ('' for the first page), cursor key, reason ('' for any), how many,
-- whose ends ('' for everybody's, else the user's tag: their index of their own).
-- The partition's ends before the cursor, newest first, of that reason:
-- {member, at, member, at, ...}.
local ended = base .. 'ended'
if ARGV[5] ~= '' then ended = base .. 'ue:' .. ARGV[5] end
local cursor, after, reason = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local want = tonumber(ARGV[4])
local out, offset, chunk = {}, 0, want * 2 + 16
while #out < want * 2 do
  local rows = redis.call('ZREVRANGEBYSCORE', ended, cursor or '+inf', '-inf', 'WITHSCORES',
                          'LIMIT', offset, chunk)
  if #rows == 0 then break end
  for j = 1, #rows, 2 do
    local member, at = rows[j], tonumber(rows[j + 1])
    local key, why = string.match(member, '^([^:]*):([^:]*):')
    local later = cursor == nil or at ~= cursor or key < after
    if later and (reason == '' or why == reason) then
      out[#out + 1] = member
      out[#out + 1] = at
      if #out >= want * 2 then break end
    end
  end
  offset = offset + chunk
end
return out
