-- Records the plan of a fanned-out stage (state/pieces.py), or returns the one recorded: a
-- run that takes the stage over goes on with its predecessor's pieces and their results.
-- KEYS: 1 the job's pieces hash, 2 the job hash.
-- ARGV: 1 the stage, 2 the run that holds the stage (owner), 3 the plan (JSON with its id),
--   4 the hash's expiry in s (a backstop: retention deletes it with the job).
-- Returns the plan in force, or '' when the run no longer holds the stage. A plan in force
-- gives its unfinished pieces that nobody holds their tries again.
--#include _piece_job.lua
local owner = redis.call('HGET', KEYS[2], 'owner')
if not running or owner ~= ARGV[2] then return '' end
local plan = redis.call('HGET', KEYS[1], ARGV[1])
if plan then
  -- A new run of the stage (a retry, a replay, a takeover): each unfinished piece that nobody
  -- holds gets its tries again; the pieces done stay done.
--#include _now_ms.lua
  for i = 0, #cjson.decode(plan).pieces - 1 do
    local p = pre(i)
    local done, until_ms = unpack(redis.call('HMGET', KEYS[1], p .. 'done', p .. 'until'))
    if not done and tonumber(until_ms or '0') <= now_ms then
      redis.call('HDEL', KEYS[1], p .. 'tries', p .. 'error')
    end
  end
  return plan
end
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do  -- an older plan's leftovers
  if string.sub(field, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then redis.call('HDEL', KEYS[1], field) end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return ARGV[3]
