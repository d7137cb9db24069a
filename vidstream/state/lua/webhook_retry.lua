-- Schedules a webhook attempt's retry and acks its entry, in one step (webhooks/queue.py); past
-- the deadline, only acks (the delivery is given up).
-- KEYS: 1 the retry set, 2 the webhook stream. ARGV: 1 the group, 2 the entry id, 3 the retry
--   (JSON), 4 the delay in ms, 5 the deadline in ms (Redis time).
-- Returns the due time, or 0 when it gave up.
--#include _now_ms.lua
local due = now_ms + tonumber(ARGV[4])
if due <= tonumber(ARGV[5]) then
  redis.call('ZADD', KEYS[1], due, ARGV[3])
else
  due = 0
end
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
return due
