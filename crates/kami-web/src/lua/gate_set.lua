-- Sets a product's count (services/gate_redis.rs). KEYS[1] the count,
-- KEYS[2] the number of the reading it was last set from, KEYS[3] the
-- counter readings are numbered by; ARGV[1] the count, ARGV[2] a number.
-- ARGV[3] = 'newer': a count read from the database by reading ARGV[2]
-- (numbered before the read), set only if no later reading set one first.
-- ARGV[3] = 'same': the database answered sold_out to an order admitted on
-- reading ARGV[2]; set only if no reading came since (one since may have
-- seen a restock the answer predates).
-- A number above the counter was taken before the counter was lost (Redis
-- restarted empty, or the key was evicted): it orders nothing, or a stale
-- one would outrank every reading until the counter caught up with it.
-- A count lifted from 0 or below (or from none) is published to ARGV[4]
-- with the product ARGV[5], so every instance drops its sold-out mark
-- (gate_marks.rs).
-- Returns the count held afterwards (nil if none, or not a number).
local counter = tonumber(redis.call('GET', KEYS[3])) or 0
local cur = tonumber(redis.call('GET', KEYS[2])) or 0
if cur > counter then
  cur = 0
end
local before = tonumber(redis.call('GET', KEYS[1])) or 0
local reading = tonumber(ARGV[2])
local set = false
if ARGV[3] == 'newer' and cur < reading and reading <= counter then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[2], reading)
  set = true
elseif ARGV[3] == 'same' and cur == reading then
  redis.call('SET', KEYS[1], ARGV[1])
  set = true
end
if set and before <= 0 and tonumber(ARGV[1]) > 0 then
  -- pcall: a Redis user refused the channel still keeps its count (and
  -- cannot subscribe, so no instance marks anything).
  redis.pcall('PUBLISH', ARGV[4], ARGV[5])
end
return tonumber(redis.call('GET', KEYS[1]))
