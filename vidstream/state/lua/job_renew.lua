-- Extends a run's lease on its job while it still holds it (JobStore.renew).
-- KEYS: 1 the job hash. ARGV: 1 the run (owner), 2 the lease in ms.
-- Returns 1, or 0 when another run holds the stage, or when nobody does: -1 if the job was
-- cancelled (or is gone), -2 if it went on (or ended) without this run (another run finished
-- the stage).
local owner, status = unpack(redis.call('HMGET', KEYS[1], 'owner', 'status'))
if owner ~= ARGV[1] then
  if owner and owner ~= '' then return 0 end
  if status == 'cancelled' or not status then return -1 end
  return -2
end
--#include _now_ms.lua
redis.call('HSET', KEYS[1], 'lease_until', now_ms + tonumber(ARGV[2]))
return 1
