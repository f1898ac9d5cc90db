-- The stock gate's check-and-decrement for a batch of orders
-- (services/gate_redis.rs), in the order they arrived; a product may appear
-- more than once. KEYS[2i-1] the product's count of available codes,
-- KEYS[2i] the number of the reading that count was last set from;
-- ARGV[i] the quantity order i asks for.
-- Returns {verdict 1, count 1, reading 1, verdict 2, ...}: verdict 1 =
-- taken (count is what is left), 0 = refused (count is what there is), -1 =
-- no count kept, or not a number (let it pass: one bad key must not fail
-- the batch's other orders); reading is the count's reading when taken
-- (0 if none, and 0 when not taken: the reading is only asked for then).
local out = {}
for i = 1, #ARGV do
  local key = KEYS[2 * i - 1]
  local left = tonumber(redis.call('GET', key))
  local want = tonumber(ARGV[i])
  local reading = 0
  if not left then
    out[#out + 1] = -1
    out[#out + 1] = 0
  elseif left >= want then
    out[#out + 1] = 1
    out[#out + 1] = redis.call('DECRBY', key, want)
    reading = tonumber(redis.call('GET', KEYS[2 * i])) or 0
  else
    out[#out + 1] = 0
    out[#out + 1] = left
  end
  out[#out + 1] = reading
end
return out
