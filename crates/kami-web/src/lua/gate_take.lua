-- The stock gate's check-and-decrement for a batch of orders
-- (services/gate_redis.rs), in the order they arrived; a product may appear
-- more than once. KEYS[i] the product's count of available codes; ARGV[i]
-- the quantity order i asks for.
-- Returns {verdict 1, count 1, verdict 2, count 2, ...}: verdict 1 = taken
-- (count is what is left), 0 = refused (count is what there is), -1 = no
-- count kept (let it pass).
local out = {}
for i = 1, #KEYS do
  local left = redis.call('GET', KEYS[i])
  if not left then
    out[#out + 1] = -1
    out[#out + 1] = 0
  else
    left = tonumber(left)
    local want = tonumber(ARGV[i])
    if left >= want then
      out[#out + 1] = 1
      out[#out + 1] = redis.call('DECRBY', KEYS[i], want)
    else
      out[#out + 1] = 0
      out[#out + 1] = left
    end
  end
end
return out
