-- Leases a piece of a fanned-out stage to a run (state/pieces.py): piece ARGV[3], or the first
-- one free when ARGV[3] is ''. A piece is free when not done, not leased (or its lease lapsed:
-- its worker is presumed dead) and tried fewer than ARGV[6] times.
-- KEYS: 1 the job's pieces hash, 2 the job hash.
-- ARGV: 1 the stage, 2 the plan's id, 3 the piece's index or '', 4 the run (owner), 5 the
--   lease in ms, 6 the tries a piece gets, 7 the number of pieces.
-- Returns {'ok', index, try} or {why}: 'gone' (the job no longer runs the stage), 'stale' (the
-- entry is of another plan), 'done', 'busy', 'exhausted', or 'none' (no piece is free). With
-- ARGV[3] '' and no piece free, {'exhausted', index} names a piece out of tries, if any: the
-- stage cannot end without it.
-- Taking over a lapsed lease records why the try before it ended (`worker_lost`), so a piece
-- whose workers keep dying ends out of tries with a reason, like one that fails.
--#include _piece_job.lua
if not running then return {'gone'} end
local plan = redis.call('HGET', KEYS[1], ARGV[1])
if not plan or cjson.decode(plan).id ~= ARGV[2] then return {'stale'} end
--#include _now_ms.lua
local function free(i)
  local p = pre(i)
  local done, owner, until_ms, tries = unpack(redis.call('HMGET', KEYS[1], p .. 'done',
    p .. 'owner', p .. 'until', p .. 'tries'))
  if done then return 'done' end
  if owner and owner ~= '' and tonumber(until_ms or '0') > now_ms then return 'busy' end
  if tonumber(tries or '0') >= tonumber(ARGV[6]) then return 'exhausted' end
  return 'ok'
end
local function take(i)
  local p = pre(i)
  local owner = redis.call('HGET', KEYS[1], p .. 'owner')
  if owner and owner ~= '' then  -- its lease lapsed: that worker died or was cut off
    redis.call('HSET', KEYS[1], p .. 'error', cjson.encode({code = 'worker_lost',
      message = 'The worker working on it stopped answering.', permanent = false}))
  end
  local tries = redis.call('HINCRBY', KEYS[1], p .. 'tries', 1)
  redis.call('HSET', KEYS[1], p .. 'owner', ARGV[4], p .. 'until', now_ms + tonumber(ARGV[5]),
    p .. 'frac', 0)
  return {'ok', i, tries}
end
if ARGV[3] ~= '' then
  local why = free(ARGV[3])
  if why ~= 'ok' then return {why} end
  return take(ARGV[3])
end
local spent = nil
for i = 0, tonumber(ARGV[7]) - 1 do
  local why = free(i)
  if why == 'ok' then return take(i) end
  if why == 'exhausted' and not spent then spent = i end
end
if spent then return {'exhausted', spent} end
return {'none'}
