-- A run lets a piece go (state/pieces.py): done with its result, failed with its error, or
-- handed back untried (a worker shutting down). Fenced: only the run holding the piece's lease
-- may, so a run presumed dead that wakes late writes nothing.
-- KEYS: 1 the job's pieces hash, 2 the job hash.
-- ARGV: 1 the stage, 2 the piece's index, 3 the run (owner), 4 'done' | 'failed' | 'back',
--   5 the result or the error (JSON).
-- Returns 1, or 0 when another run holds the piece, -1 when the job no longer runs the stage.
--#include _piece_job.lua
if not running then return -1 end
local p = pre(ARGV[2])
if redis.call('HGET', KEYS[1], p .. 'owner') ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], p .. 'owner', '', p .. 'until', 0)
if ARGV[4] == 'done' then
  redis.call('HSET', KEYS[1], p .. 'done', ARGV[5], p .. 'frac', 1)
  redis.call('HDEL', KEYS[1], p .. 'error')
elseif ARGV[4] == 'failed' then
  redis.call('HSET', KEYS[1], p .. 'error', ARGV[5])
elseif tonumber(redis.call('HGET', KEYS[1], p .. 'tries') or '0') > 0 then
  redis.call('HINCRBY', KEYS[1], p .. 'tries', -1)  -- handed back untried: not a try
end
return 1
