"""The Lua scripts behind every atomic step in Redis. Each touches one job's keys (one hash
slot, for Redis Cluster) except `PROMOTE`, which moves due retries onto the stage streams.

Times come from Redis (`TIME`), never from a worker's clock, so leases mean the same thing on
every machine.
"""

from __future__ import annotations

_NOW_MS = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: job hash, job events. ARGV[1]: JSON of the job's fields, ARGV[2]: history length.
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return '' end
local fields = cjson.decode(ARGV[1])
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'event', 'queued',
  'status', fields.status, 'stage', '', 'progress', fields.progress, 'at', fields.created_at,
  'attempts', 0, 'data', '')
"""

# KEYS: job hash, job events. ARGV[1]: a transition (state.Transition.to_script_args).
# Returns {outcome, status or event id, attempts}; outcome is one of
#   ok | missing | rejected (status or stage does not allow it) | lost (another run holds the
#   stage) | busy (a live run holds it) | exhausted (no attempts left) | done (stage finished
#   already) | unchanged (progress did not grow).
TRANSITION = (
    """
local a = cjson.decode(ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'status', 'stage', 'progress', 'outputs', 'owner',
  'lease_until', 'attempts', 'done', 'last_tx', 'last_event')
local status, stage = f[1], f[2] or ''
if not status then return {'missing', '', 0} end
local attempts = tonumber(f[7]) or 0
if a.tx == f[9] then return {'ok', f[10], attempts} end
if not a['from'][status] then return {'rejected', status, attempts} end
if a.expect_stage and stage ~= a.expect_stage then return {'rejected', status, attempts} end
local owner = f[5] or ''
if a.owner and owner ~= a.owner then return {'lost', status, attempts} end
"""
    + _NOW_MS
    + """
if a.claim then
  if status == 'running' and stage == a.stage and owner ~= '' and owner ~= a.claim
     and (tonumber(f[6]) or 0) > now_ms then
    return {'busy', status, attempts}
  end
  if a.count_attempt then
    if stage == a.stage then attempts = attempts + 1 else attempts = 1 end
    if a.max_attempts > 0 and attempts > a.max_attempts then
      return {'exhausted', status, attempts - 1}
    end
  elseif attempts == 0 or stage ~= a.stage then
    attempts = 1
  end
end
local done = f[8] or ''
if a.finish and string.find(',' .. done .. ',', ',' .. a.finish .. ',', 1, true) then
  return {'done', status, attempts}
end
local old = tonumber(f[3]) or 0
local progress = old
if a.progress and a.progress > old then progress = a.progress end
if a.skip_if_no_progress and progress <= old then return {'unchanged', status, attempts} end
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
return {'ok', id, attempts}
"""
)

# KEYS: job hash. ARGV: owner, lease in ms. Extends the run's lease if it still holds it;
# a lease of 0 lets the stage go at once (a worker handing a job back at shutdown).
RENEW = (
    """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
"""
    + _NOW_MS
    + """
redis.call('HSET', KEYS[1], 'lease_until', now_ms + tonumber(ARGV[2]))
return 1
"""
)

# KEYS: the delayed set, then the stage streams. ARGV: the stage names in the same order.
# Moves every retry that is due onto its stage's stream.
PROMOTE = (
    _NOW_MS
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, 100)
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  local sep = string.find(member, '|', 1, true)
  local stage, job = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
  for i, name in ipairs(ARGV) do
    if name == stage then redis.call('XADD', KEYS[i + 1], '*', 'job_id', job) end
  end
end
return #due
"""
)
