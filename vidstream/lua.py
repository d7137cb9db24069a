"""The Lua scripts behind every atomic step in Redis.

A job's state change and the hand-off it causes (an entry on a stage stream, a delayed retry, a
dead letter) happen in one script, so no crash or lost reply can leave a job waiting for an
entry that was never written, and a resent script (same transaction id) writes nothing twice.
Each hand-off bumps the job's generation and stamps it on the entry; a claim carrying an older
generation is stale, which makes duplicate entries harmless.

The scripts touch the job's two keys (one hash slot) plus at most one shared key; under Redis
Cluster that shared key would become a per-slot outbox.

Times come from Redis (`TIME`), never from a worker's clock, so leases and retry delays mean the
same thing on every machine.
"""

from __future__ import annotations

_NOW_MS = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: job hash, job events, first stage's stream. ARGV: JSON of the job's fields, history
# length. A resend finds the job there and writes nothing.
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return '' end
local fields = cjson.decode(ARGV[1])
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
redis.call('HSET', KEYS[1], 'gen', 1)
redis.call('XADD', KEYS[3], '*', 'job_id', fields.id, 'gen', 1)
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'event', 'queued',
  'status', fields.status, 'stage', '', 'progress', fields.progress, 'at', fields.created_at,
  'attempts', 0, 'data', '')
"""

# KEYS: job hash, job events, and the key of the hand-off if any (a stage stream, the delayed
# set or the dead letters). ARGV[1]: a transition (state.Transition.to_script_args).
# Returns {outcome, status or event id, attempts, generation}; outcome is one of
#   ok | missing | rejected (status or stage does not allow it) | lost (another run holds the
#   stage) | busy (a live run holds the job) | stale (the entry is older than the job's last
#   hand-off) | exhausted (no attempts left) | done (stage finished) | unchanged (progress).
TRANSITION = (
    """
local a = cjson.decode(ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'status', 'stage', 'progress', 'outputs', 'owner',
  'lease_until', 'attempts', 'done', 'last_tx', 'last_event', 'gen', 'handed_back', 'id')
local status, stage = f[1], f[2] or ''
if not status then return {'missing', '', 0, 0} end
local attempts, gen = tonumber(f[7]) or 0, tonumber(f[11]) or 0
if a.tx == f[9] then return {'ok', f[10], attempts, gen} end
if not a['from'][status] then return {'rejected', status, attempts, gen} end
if a.expect_stage and stage ~= a.expect_stage then return {'rejected', status, attempts, gen} end
local owner = f[5] or ''
if a.owner and owner ~= a.owner then return {'lost', status, attempts, gen} end
local done = f[8] or ''
local function finished(name)
  return string.find(',' .. done .. ',', ',' .. name .. ',', 1, true) ~= nil
end
"""
    + _NOW_MS
    + """
if a.claim then
  if a.gen and a.gen ~= gen then return {'stale', status, attempts, gen} end
  if finished(a.stage) then return {'done', status, attempts, gen} end
  if owner ~= '' and owner ~= a.claim and (tonumber(f[6]) or 0) > now_ms then
    return {'busy', status, attempts, gen}
  end
  if f[12] == '1' then
    redis.call('HDEL', KEYS[1], 'handed_back')  -- handed back at a shutdown: not a new try
    if stage ~= a.stage or attempts == 0 then attempts = 1 end
  elseif stage == a.stage then
    attempts = attempts + 1
  else
    attempts = 1
  end
  if a.max_attempts > 0 and attempts > a.max_attempts then
    return {'exhausted', status, attempts - 1, gen}
  end
end
if a.finish and finished(a.finish) then return {'done', status, attempts, gen} end
local old = tonumber(f[3]) or 0
local progress = old
if a.progress and a.progress > old then progress = a.progress end
if a.skip_if_no_progress and progress <= old then return {'unchanged', status, attempts, gen} end
if a.stage then stage = a.stage end
if a.reset then attempts = 0 end
redis.call('HSET', KEYS[1], 'status', a.status, 'stage', stage, 'progress', progress,
  'updated_at', a.now, 'attempts', attempts)
for k, v in pairs(a.fields) do redis.call('HSET', KEYS[1], k, v) end
if a.outputs then
  local outputs = cjson.decode(f[4] or '{}')
  for k, v in pairs(a.outputs) do outputs[k] = v end
  redis.call('HSET', KEYS[1], 'outputs', cjson.encode(outputs))
end
if a.claim then
  redis.call('HSET', KEYS[1], 'owner', a.claim, 'lease_until', now_ms + a.lease_ms)
end
if a.release or a.reset then redis.call('HSET', KEYS[1], 'owner', '', 'lease_until', 0) end
if a.finish then
  if done == '' then done = a.finish else done = done .. ',' .. a.finish end
  redis.call('HSET', KEYS[1], 'done', done)
end
local p = a.push
if p then
  local job = f[13]
  if p.kind == 'stage' then
    gen = gen + 1
    redis.call('XADD', KEYS[3], '*', 'job_id', job, 'gen', gen)
  elseif p.kind == 'retry' then
    gen = gen + 1
    redis.call('ZADD', KEYS[3], now_ms + p.delay_ms, p.stage .. '|' .. job .. '|' .. gen)
  elseif p.kind == 'dead' then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 'job_id', job, 'stage', p.stage,
      'code', p.code, 'message', p.message, 'attempts', attempts, 'at', a.now)
  end
  redis.call('HSET', KEYS[1], 'gen', gen)
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', a.maxlen, '*', 'event', a.event,
  'status', a.status, 'stage', stage, 'progress', progress, 'at', a.now,
  'attempts', attempts, 'data', a.data)
redis.call('HSET', KEYS[1], 'last_tx', a.tx, 'last_event', id)
if a.ttl > 0 then
  redis.call('EXPIRE', KEYS[1], a.ttl)
  redis.call('EXPIRE', KEYS[2], a.ttl)
elseif a.persist then
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
end
return {'ok', id, attempts, gen}
"""
)

# KEYS: job hash. ARGV: owner, lease in ms. Extends the run's lease if it still holds it.
# Returns 1, or 0 when another run holds the stage, or -1 when nobody does (released).
RENEW = (
    """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner ~= ARGV[1] then
  if owner == false or owner == '' then return -1 end
  return 0
end
"""
    + _NOW_MS
    + """
redis.call('HSET', KEYS[1], 'lease_until', now_ms + tonumber(ARGV[2]))
return 1
"""
)

# KEYS: job hash, the stage's stream. ARGV: owner. A worker stopping hands its run back: the
# stage is free at once, and a new entry (new generation) lets another worker take it up;
# that try is not counted against the job's attempts.
HANDBACK = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
local gen = (tonumber(redis.call('HGET', KEYS[1], 'gen')) or 0) + 1
redis.call('HSET', KEYS[1], 'owner', '', 'lease_until', 0, 'handed_back', 1, 'gen', gen)
redis.call('XADD', KEYS[2], '*', 'job_id', redis.call('HGET', KEYS[1], 'id'), 'gen', gen)
return 1
"""

# KEYS: the delayed set, then the stage streams. ARGV: the stage names in the same order.
# Moves every retry that is due onto its stage's stream.
PROMOTE = (
    _NOW_MS
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, 100)
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  local stage, job, gen = string.match(member, '^([^|]+)|([^|]+)|?(%d*)$')
  for i, name in ipairs(ARGV) do
    if name == stage then
      if gen and gen ~= '' then
        redis.call('XADD', KEYS[i + 1], '*', 'job_id', job, 'gen', gen)
      else
        redis.call('XADD', KEYS[i + 1], '*', 'job_id', job)
      end
    end
  end
end
return #due
"""
)
