-- The stock gate's check-and-decrement for a batch of orders
-- (services/gate_redis.rs), in the order they arrived; a product may appear
-- more than once.
--
-- First the batch's settlements: ARGV[1] = n, then KEYS[1..n] the held
-- counts of products and ARGV[2..n+1] the codes of their orders the
-- database has answered since the last batch (no longer in flight).
--
-- Then per order i: KEYS[n+3i-2] the product's count of available codes
-- (less the codes of orders in flight), KEYS[n+3i-1] the number of the
-- reading that count was last set from, KEYS[n+3i] the codes of its orders
-- in flight (held); ARGV[n+1+i] the quantity order i asks for.
--
-- Returns {verdict 1, count 1, reading 1, verdict 2, ...}: verdict
--   1 = taken (count is what is left; the codes are now held),
--   2 = not taken, but orders in flight hold enough codes that theirs may
--       yet come back (the database refusing them): the order passes
--       ungated and the database decides (invariant 6: the gate refuses
--       only what the database would), count is what is left,
--   0 = refused (count is what there is, in flight included),
--  -1 = no count kept, or not a number (let it pass: one bad key must not
--       fail the batch's other orders);
-- reading is the count's reading when taken (0 otherwise).
-- A held count expires 5 s after its last take: the holds of an instance
-- that died are forgotten then, not kept as codes that may come back.
-- Held counts are touched with pcall: one that is not a number (written
-- behind the scripts' back) must not fail the batch's orders, and counts
-- as nothing in flight.
local n = tonumber(ARGV[1])
for i = 1, n do
  local h = redis.pcall('DECRBY', KEYS[i], ARGV[1 + i])
  if type(h) == 'number' and h <= 0 then
    redis.call('DEL', KEYS[i])
  end
end
local out = {}
for i = 1, #ARGV - 1 - n do
  local key = KEYS[n + 3 * i - 2]
  local held_key = KEYS[n + 3 * i]
  local left = tonumber(redis.call('GET', key))
  local want = tonumber(ARGV[n + 1 + i])
  local reading = 0
  if not left then
    out[#out + 1] = -1
    out[#out + 1] = 0
  elseif left >= want then
    out[#out + 1] = 1
    out[#out + 1] = redis.call('DECRBY', key, want)
    redis.pcall('INCRBY', held_key, want)
    redis.pcall('PEXPIRE', held_key, 5000)
    reading = tonumber(redis.call('GET', KEYS[n + 3 * i - 1])) or 0
  else
    local got = redis.pcall('GET', held_key)
    local held = type(got) == 'string' and tonumber(got) or 0
    if held < 0 then
      held = 0
    end
    if left + held >= want then
      out[#out + 1] = 2
      out[#out + 1] = left
    else
      out[#out + 1] = 0
      out[#out + 1] = left + held
    end
  end
  out[#out + 1] = reading
end
return out
