-- ARGV: key, data (JSON text), the version it was read at ('' to replace whatever is there).
-- 1 written; 0 not open (never resurrects); {data, version} written by another request since.
local session = base .. 's:' .. ARGV[1]
local version = redis.call('HGET', session, 'v')
if not version then return 0 end
if ARGV[3] ~= '' and version ~= ARGV[3] then
  return {redis.call('HGET', session, 'd'), version}
end
redis.call('HSET', session, 'd', ARGV[2], 'v', tonumber(version) + 1)
return 1
