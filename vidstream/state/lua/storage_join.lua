-- Adds a process to the users of the deployment's storage, unless a live user reaches other files
-- (state/sharing.py). A member is `<place>|<nonce>|<where>`, scored by when it lapses (ms, Redis
-- time); lapsed members (processes that died) are dropped first. Renewing is joining again.
-- KEYS: 1 the sorted set of users. ARGV: 1 our member, 2 our place, 3 the lapse in ms.
-- Returns nil when added or renewed, else the member of a live user whose place differs.
--#include _now_ms.lua
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
local ours = ARGV[2] .. '|'
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(member, 1, #ours) ~= ours then
    return member
  end
end
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return false
