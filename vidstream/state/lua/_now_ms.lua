-- Included by the scripts that need the time, not run alone. Sets `now_ms`: Redis's clock in
-- ms. Times come from Redis, never from a caller's clock, so a lease or a delay means the same
-- thing whichever machine wrote it.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
