-- Moves every retry that is due from the delayed set onto its stage's stream, at its priority
-- (JobStore.promote_due). Members are `stage|job id|generation|priority` (normal for members
-- written before priorities, no generation for older ones).
-- KEYS: 1 the delayed set, then every stage's streams. ARGV: their names as `stage:priority`,
--   in the same order.
-- Returns how many were due.
--#include _now_ms.lua
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, 100)
local index = {}
for i, name in ipairs(ARGV) do index[name] = i + 1 end
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  local stage, job, gen, priority = string.match(member, '^([^|]+)|([^|]+)|?(%d*)|?(%a*)$')
  if priority == nil or priority == '' then priority = 'normal' end
  local at = stage and index[stage .. ':' .. priority]
  if at then
    if gen and gen ~= '' then
      redis.call('XADD', KEYS[at], '*', 'job_id', job, 'gen', gen)
    else
      redis.call('XADD', KEYS[at], '*', 'job_id', job)
    end
  end
end
return #due
