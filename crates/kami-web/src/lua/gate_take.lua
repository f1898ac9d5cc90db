-- The stock gate's check-and-decrement (services/gate_redis.rs).
-- KEYS[1] the product's count of available codes; ARGV[1] the quantity.
-- Returns {verdict, count}: verdict 1 = taken (count is what is left),
-- 0 = refused (count is what there is), -1 = no count kept (let it pass).
local left = redis.call('GET', KEYS[1])
if not left then
  return {-1, 0}
end
left = tonumber(left)
local want = tonumber(ARGV[1])
if left >= want then
  return {1, redis.call('DECRBY', KEYS[1], want)}
end
return {0, left}
