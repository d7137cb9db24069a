-- Extends a run's lease on a piece and records how far it is (state/pieces.py).
-- KEYS: 1 the job's pieces hash, 2 the job hash.
-- ARGV: 1 the stage, 2 the piece's index, 3 the run (owner), 4 the lease in ms, 5 the fraction
--   done ('' to leave it).
-- Returns 1 when renewed, 0 when another run holds the piece (or it is done), -1 when the job
-- no longer runs the stage (cancelled, failed or moved on).
--#include _piece_job.lua
if not running then return -1 end
local p = pre(ARGV[2])
if redis.call('HGET', KEYS[1], p .. 'owner') ~= ARGV[3] then return 0 end
--#include _now_ms.lua
redis.call('HSET', KEYS[1], p .. 'until', now_ms + tonumber(ARGV[4]))
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], p .. 'frac', ARGV[5]) end
return 1
