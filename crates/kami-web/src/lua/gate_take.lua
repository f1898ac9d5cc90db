-- The stock gate's check-and-decrement for a batch of orders
-- (services/gate_redis.rs), in the order they arrived; a product may appear
-- more than once. KEYS[i] the product's count of available codes; ARGV[i]
-- the quantity order i asks for.
-- Returns {verdict 1, count 1, verdict 2, count 2, ...}: verdict 1 = taken
-- (count is what is left), 0 = refused (count is what there is), -1 = no
-- count kept, or not a number (let it pass: one bad key must not fail the
-- batch's other orders).
local out = {}
for i = 1, #KEYS do
  local left = tonumber(redis.call('GET', KEYS[i]))
  local want = tonumber(ARGV[i])
  if not left then
    out[#out + 1] = -1
    out[#out + 1] = 0
  elseif left >= want then
    out[#out + 1] = 1
    out[#out + 1] = redis.call('DECRBY', KEYS[i], want)
  else
    out[#out + 1] = 0
    out[#out + 1] = left
  end
end
return out
