-- A rate limit per API key or client address (http/auth.py), by GCRA: a key may send `burst`
-- requests at once, then one every `interval`. One timestamp per key (the "theoretical arrival
-- time"), in Redis time.
-- KEYS: 1 the bucket. ARGV: 1 the interval in ms, 2 the burst in ms (interval times the
--   requests allowed at once), 3 `peek` to only say whether a request would pass, counting
--   nothing.
-- Returns how many ms to wait (0: go on).
--#include _now_ms.lua
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now_ms)
if tat < now_ms then tat = now_ms end
local allowed_at = tat + interval - burst
if allowed_at > now_ms then return allowed_at - now_ms end
if ARGV[3] == 'peek' then return 0 end
redis.call('SET', KEYS[1], tat + interval, 'PX', tat + interval - now_ms + 1000)
return 0
