-- ARGV: key, reason, now, consumer, seconds to keep the tombstone. The event, or nil.
local event = finish(ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[5]))
if event then deliver(ARGV[4], 1) end
return event
