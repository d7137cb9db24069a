-- Moves the webhook retries that are due onto the webhook stream (webhooks/queue.py).
-- KEYS: 1 the retry set, 2 the webhook stream. ARGV: 1 the most to move, 2 the stream's length.
-- Returns how many it moved.
--#include _now_ms.lua
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, ARGV[1])
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  local r = cjson.decode(member)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'job_id', r.job_id,
    'event', r.event, 'event_id', r.event_id, 'delivery', r.delivery, 'attempt', r.attempt)
end
return #due
