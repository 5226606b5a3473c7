-- ARGV: sorted set (due, seen or born), 1 for descending, now, cursor value ('' for the
-- first page), cursor key, how many. The partition's active sessions (open, before their
-- deadline) after the cursor in the list's order: {key, value, key, value, ...}.
local zset, descending, now = base .. ARGV[1], ARGV[2] == '1', tonumber(ARGV[3])
local cursor, after, want = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local due = base .. 'due'
local out, offset, chunk = {}, 0, want * 2 + 16
while #out < want * 2 do
  local rows
  if descending then
    rows = redis.call('ZREVRANGEBYSCORE', zset, cursor or '+inf', '-inf', 'WITHSCORES',
                      'LIMIT', offset, chunk)
  else
    rows = redis.call('ZRANGEBYSCORE', zset, cursor or '-inf', '+inf', 'WITHSCORES',
                      'LIMIT', offset, chunk)
  end
  if #rows == 0 then break end
  for j = 1, #rows, 2 do
    local key, value = rows[j], tonumber(rows[j + 1])
    local later = cursor == nil or value ~= cursor
                  or (descending and key < after) or (not descending and key > after)
    if later then
      local deadline = tonumber(redis.call('ZSCORE', due, key))
      if deadline and deadline > now then
        out[#out + 1] = key
        out[#out + 1] = value
        if #out >= want * 2 then break end
      end
    end
  end
  offset = offset + chunk
end
return out
