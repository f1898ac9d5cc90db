-- Adds codes back to a product's count (an order the database refused, or
-- codes its expiry released), or takes them with a negative quantity (an
-- operator voided codes) — only if a count is kept: creating one here
-- would invent a count far below the truth. The next re-sync loads it.
-- KEYS[1] the count; ARGV[1] the quantity. Returns the new count or -1.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('INCRBY', KEYS[1], ARGV[1])
end
return -1
