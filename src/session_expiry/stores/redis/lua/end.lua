-- ARGV: key, reason, now, consumer, seconds to keep the tombstone. The event, or nil.
return finish(ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]))
