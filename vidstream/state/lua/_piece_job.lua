-- Included by the piece scripts, not run alone. Sets `running`: whether the job (KEYS[2]) still
-- runs the stage ARGV[1] (not cancelled, failed, finished or moved on), and `pre(i)`: the
-- prefix of piece i's fields in the pieces hash (KEYS[1]).
local job_status, job_stage = unpack(redis.call('HMGET', KEYS[2], 'status', 'stage'))
local running = job_status == 'running' and job_stage == ARGV[1]
local function pre(i) return ARGV[1] .. ':' .. i .. ':' end
