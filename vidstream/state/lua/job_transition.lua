-- Applies one operation of the job protocol (vidstream/job/protocol/ops.py) to a job, atomically
-- (JobStore.apply): checks what the operation requires of the job as it is, writes the job,
-- appends the event to its history and to the events feed, and makes the hand-off (the next
-- stage's entry, a delayed retry, a dead letter, a cancel notice) in the same step, so no crash
-- or lost reply can leave a job waiting for an entry that was never written. protocol/model.py
-- is the reference it mirrors; tests/test_protocol_model.py checks that the two agree.
-- Each hand-off to a stage bumps the job's generation and stamps it on the entry; a claim from
-- an older entry is stale, which makes duplicate entries harmless.
-- KEYS: 1 the job hash, 2 its events, 3 the webhook stream (the end of a job that has a
--   webhook_url leaves an entry there for the deliverer), 4 the status counts, 5 the retention
--   set, 6 the events feed, then the hand-off's key if any: 7-9 the stage's streams (high,
--   normal, low: the entry goes to the job's priority), or 7 the delayed set, the dead letters
--   or the control stream.
-- ARGV: 1 the operation as JSON (ops.encode): `op` (its name), `tx`, `now` (Unix time),
--   `event` ('' for none) and its `data`, `status` (where it leads), `from` (the statuses it
--   applies in), `guards` ({name, outcome} pairs, checked in order), `keeps_stage`,
--   `default_kind` (what a job written before kinds existed is), `push` ({kind, stage,
--   delay_ms}) if any, and its own fields (stage, owner, ...); then from the
--   store `maxlen`, `feed_max`, `ttl` (0 unless it ends the job), `events_ttl`, `retain_s`,
--   `shared_max`.
-- Returns {outcome, status, event id, attempts, gen}.
local a = cjson.decode(ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'status', 'stage', 'progress', 'outputs', 'owner',
  'lease_until', 'attempts', 'done', 'last_tx', 'last_event', 'gen', 'handed_back', 'id', 'kind',
  'webhook_url', 'tenant', 'priority')
local status = f[1]
if not status then return {'missing', '', '', 0, 0} end
local stage, owner, done, job_id = f[2] or '', f[5] or '', f[8] or '', f[13]
local progress, attempts, gen = tonumber(f[3]) or 0, tonumber(f[7]) or 0, tonumber(f[11]) or 0
if a.tx == f[9] then return {'ok', status, f[10] or '', attempts, gen} end  -- a resend
if not a['from'][status] then return {'rejected', status, '', attempts, gen} end
--#include _now_ms.lua

local function finished(name)
  return string.find(',' .. done .. ',', ',' .. name .. ',', 1, true) ~= nil
end

-- The number a claim of stage `name` gives its try (guards.next_try): a run handed back at a
-- shutdown is no new try.
local function next_try(name)
  if f[12] == '1' then
    if stage == name and attempts > 0 then return attempts end
    return 1
  end
  if stage == name then return attempts + 1 end
  return 1
end

local function merged_outputs(more)
  local outputs = cjson.decode(f[4] or '{}')
  for k, v in pairs(more) do outputs[k] = v end
  return cjson.encode(outputs)
end

-- The guards (protocol/guards.py, by name): true when the operation may go on; a second value,
-- the try count the refusal reports, when it is not the job's.
local guard = {}
function guard.current() return a.gen < 0 or a.gen == gen end
function guard.unfinished() return not finished(a.stage) end
function guard.lease_free()
  return owner == '' or owner == a.owner or (tonumber(f[6]) or 0) <= now_ms
end
function guard.tries_left()
  local tries = next_try(a.stage)
  return not (a.max_attempts > 0 and tries > a.max_attempts), tries - 1
end
function guard.at_stage() return stage == a.stage end
function guard.holds() return a.owner == nil or owner == a.owner end
function guard.forward() return a.outputs ~= nil or a.progress > progress end

for _, g in ipairs(a.guards) do
  local ok, tries = guard[g[1]]()
  if not ok then return {g[2], status, '', tries or attempts, gen} end
end

-- What each operation writes of its own (`change` of its class in protocol/ops.py), one
-- function per operation. One may return a function to run with the id of the event written.
local op = {}
function op.claim()
  attempts, stage = next_try(a.stage), a.stage
  if a.progress > progress then progress = a.progress end
  redis.call('HSET', KEYS[1], 'owner', a.owner, 'lease_until', now_ms + a.lease_ms)
  redis.call('HDEL', KEYS[1], 'handed_back')
end
function op.progress()
  if a.outputs then  -- a stage's early output (a preview): stored whatever the progress
    redis.call('HSET', KEYS[1], 'outputs', merged_outputs(a.outputs))
  end
  if a.progress > progress then progress = a.progress end
end
function op.finish()
  if done == '' then done = stage else done = done .. ',' .. stage end
  redis.call('HSET', KEYS[1], 'outputs', merged_outputs(a.outputs), 'done', done)
  if a.media ~= '' then redis.call('HSET', KEYS[1], 'media', a.media) end
  if a.progress > progress then progress = a.progress end
  if a.status == 'completed' then stage = '' end
end
function op.retry() redis.call('HSET', KEYS[1], 'error', a.error) end
function op.fail() redis.call('HSET', KEYS[1], 'error', a.error) end
function op.cancel() end
function op.handback() redis.call('HSET', KEYS[1], 'handed_back', 1) end
function op.replay()
  stage, attempts = '', 0  -- a new run: no stage, no try yet
  redis.call('HSET', KEYS[1], 'error', '')
  return function(id)
    redis.call('HSET', KEYS[1], 'run_from', id)  -- where the new run's events begin
    redis.call('ZREM', KEYS[5], job_id)  -- running again: kept
  end
end

local after = op[a.op]()
if not a.keeps_stage then  -- the run lets the stage go
  redis.call('HSET', KEYS[1], 'owner', '', 'lease_until', 0)
end

local p = a.push
if p then
  local priority = f[17] or 'normal'
  if p.kind == 'stage' then
    gen = gen + 1
    local at = ({high = 7, normal = 8, low = 9})[priority] or 8
    redis.call('XADD', KEYS[at], '*', 'job_id', job_id, 'gen', gen)
  elseif p.kind == 'retry' then
    gen = gen + 1
    redis.call('ZADD', KEYS[7], now_ms + p.delay_ms,
      p.stage .. '|' .. job_id .. '|' .. gen .. '|' .. priority)
  elseif p.kind == 'dead' then
    redis.call('XADD', KEYS[7], 'MAXLEN', '~', a.shared_max, '*', 'job_id', job_id,
      'stage', p.stage, 'code', a.code, 'message', a.message, 'attempts', attempts, 'at', a.now,
      'tenant', f[16] or 'default')
  elseif p.kind == 'notice' then
    redis.call('XADD', KEYS[7], 'MAXLEN', '~', a.shared_max, '*', 'action', 'cancel',
      'job_id', job_id, 'stage', stage)
  end
end

redis.call('HSET', KEYS[1], 'status', a.status, 'stage', stage, 'progress', progress,
  'updated_at', a.now, 'attempts', attempts, 'gen', gen, 'last_tx', a.tx)
local id = ''
if a.event ~= '' then
  local kind = f[14] or a.default_kind
  id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', a.maxlen, '*', 'event', a.event,
    'status', a.status, 'stage', stage, 'progress', progress, 'at', a.now,
    'attempts', attempts, 'data', a.data, 'kind', kind)
  -- The same event on the shared feed, whole, so a notifier fans it out without reading the
  -- job's history.
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', a.feed_max, '*', 'job_id', job_id, 'id', id,
    'event', a.event, 'status', a.status, 'stage', stage, 'progress', progress, 'at', a.now,
    'attempts', attempts, 'data', a.data, 'kind', kind)
end
redis.call('HSET', KEYS[1], 'last_event', id)
if after then after(id) end
if a.status ~= status then
  redis.call('HINCRBY', KEYS[4], status, -1)
  redis.call('HINCRBY', KEYS[4], a.status, 1)
end
if a.ttl > 0 then  -- ended
  if f[15] and f[15] ~= '' then  -- the job's end, for its webhook
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', a.shared_max, '*', 'job_id', job_id,
      'event', a.event, 'event_id', id)
  end
  -- Removed, outputs and all, after its retention (maintenance); the keys expire a day later
  -- as a backstop, the history sooner (EVENT_RETENTION_S).
  redis.call('ZADD', KEYS[5], math.floor(now_ms / 1000) + a.retain_s, job_id)
  redis.call('EXPIRE', KEYS[1], a.ttl)
  redis.call('EXPIRE', KEYS[2], a.events_ttl)
else
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
end
return {'ok', a.status, id, attempts, gen}
