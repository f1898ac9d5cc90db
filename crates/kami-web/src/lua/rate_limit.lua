-- A token bucket as GCRA (the algorithm of the governor crate the
-- in-process limits use), so one stored number per bucket: the theoretical
-- arrival time (TAT) in microseconds of Redis's clock, which every instance
-- shares whatever its own clock says.
-- KEYS[1] the bucket; ARGV[1] microseconds per token; ARGV[2] burst.
-- Returns 0 when allowed, else the microseconds to wait.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
local new_tat = tat + interval
local wait = new_tat - now - burst * interval
if wait > 0 then
  return wait
end
-- Formatted by hand: Lua would print a 16-digit number as 1.7e+15. The key
-- disappears once the bucket is full again.
redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
  'PX', string.format('%.0f', math.ceil((new_tat - now) / 1000) + 1))
return 0
