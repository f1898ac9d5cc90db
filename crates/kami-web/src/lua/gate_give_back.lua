-- Adds codes back to a product's count (an order the database refused, or
-- codes its expiry released), or takes them with a negative quantity (an
-- operator voided codes) — only if a count is kept: creating one here
-- would invent a count far below the truth. The next re-sync loads it.
-- The count then stands on a reading of its own, newer than any taken
-- before: a re-read that began earlier, or a sold_out answer to an order
-- admitted earlier, may not know of these codes and must not undo them
-- (gate_set.lua). A count lifted from 0 or below is published to
-- ARGV[2], so every instance drops its sold-out mark (gate_marks.rs).
-- KEYS[1] the count, KEYS[2] its reading, KEYS[3] the readings' counter,
-- KEYS[4] (for an order's codes only) the codes its product's orders in
-- flight hold, which these no longer are (gate_take.lua);
-- ARGV[1] the quantity, ARGV[2] the raises' channel, ARGV[3] the product.
-- Returns the new count or -1.
if KEYS[4] then
  local h = redis.pcall('DECRBY', KEYS[4], ARGV[1])
  if type(h) == 'number' and h <= 0 then
    redis.call('DEL', KEYS[4])
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  local n = redis.call('INCRBY', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[2], redis.call('INCR', KEYS[3]))
  if n > 0 and n - tonumber(ARGV[1]) <= 0 then
    -- pcall: a Redis user refused the channel still keeps its count (and
    -- cannot subscribe, so no instance marks anything).
    redis.pcall('PUBLISH', ARGV[2], ARGV[3])
  end
  return n
end
return -1
