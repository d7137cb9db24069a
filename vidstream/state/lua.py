"""The Lua scripts behind every atomic step in Redis.

`TRANSITION` applies one operation of `protocol.ops` to a job: it checks the operation's
preconditions against the job as it is (status, stage, lease, generation, finished stages), then
writes the job, appends the event to the job's history and makes the hand-off (the next stage's
entry, a delayed retry, a dead letter) in the same step, so no crash or lost reply can leave a job
waiting for an entry that was never written. `protocol.model.apply` is the reference it mirrors,
branch for branch; `tests/test_protocol_model.py` checks that the two agree.

Each hand-off bumps the job's generation and stamps it on the entry; a claim carrying an older
generation is stale, which makes duplicate entries harmless. The scripts touch the job's keys
(one hash slot) plus shared ones: the stage streams, the delayed set, the events feed, the status
counts, the retention set and the webhook queue. Times come from Redis (`TIME`), never from a
worker's clock, so leases and retry delays mean the same thing on every machine.

Scripts that serve one component live with it (slots, maintenance, stats, rate limits, upload
tickets, the webhook queue, retention, templates, job logs); these are the job's own.
"""

from __future__ import annotations

_NOW_MS = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Before either script writes anything: the request's Idempotency-Key (`bind`: nil, or its
# entry, fingerprint, TTL and the request's nonce) must still be this request's reservation, or
# have lapsed with nobody else's in its place; else nothing is made (a second request with the
# key reserved it, or made its job, after this one's reservation lapsed).
_BIND_CHECK = """
if bind then
  local held = redis.call('GET', bind[1])
  if held and held ~= 'pending ' .. bind[4] .. ' ' .. bind[2] then return 'key_taken' end
end
"""
# What CREATE and CREATE_FROM_UPLOAD share: `fields`, `flat` and `bind` are set. One HSET of
# all fields. The key is bound to the job in this same step, so no crash between the two lets a
# resend make a second job.
_CREATE_JOB = """
if bind then  -- (checked to be this request's reservation, or lapsed: `_BIND_CHECK`)
  redis.call('SET', bind[1], fields.id .. ' ' .. bind[2], 'EX', bind[3])
  fields.idempotency = bind[1]
end
for k, v in pairs(fields) do flat[#flat + 1] = k; flat[#flat + 1] = v end
redis.call('HSET', KEYS[1], unpack(flat))
redis.call('XADD', KEYS[3], '*', 'job_id', fields.id, 'gen', 1)
redis.call('ZADD', KEYS[4], fields.created_at, fields.id)
redis.call('HINCRBY', KEYS[5], 'queued', 1)
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'event', 'queued',
  'status', fields.status, 'stage', '', 'progress', fields.progress, 'at', fields.created_at,
  'attempts', 0, 'data', '', 'kind', fields.kind)
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[3], '*', 'job_id', fields.id, 'id', id,
  'event', 'queued', 'status', fields.status, 'stage', '', 'progress', fields.progress,
  'at', fields.created_at, 'attempts', 0, 'data', '', 'kind', fields.kind)
redis.call('HSET', KEYS[1], 'last_event', id)
"""
# KEYS: job hash, job events, the first stage's stream, the tenant's jobs, the status counts,
# the events feed, and the Idempotency-Key entry if any. ARGV: the job's fields (JSON), history
# maxlen, feed maxlen, then the key's fingerprint, TTL and the request's nonce if any. Returns
# the `queued` event's id, '' when the job exists already (a resent request), or 'key_taken'.
CREATE = (
    """
if redis.call('EXISTS', KEYS[1]) == 1 then return '' end
local fields = cjson.decode(ARGV[1])
local flat = {'gen', 1}
local bind = KEYS[7] and {KEYS[7], ARGV[4], ARGV[5], ARGV[6]}
"""
    + _BIND_CHECK
    + _CREATE_JOB
    + "return id\n"
)
# A job from an upload, in one round trip (the gateway's hot path): CREATE's first six keys and
# three arguments, then KEYS 7-9: the upload's ticket, the abandoned-uploads index, the gateway's
# pause flag, and ARGV 4-6: the tenant, the upload's key, what the storage check found (`ok`,
# `missing`, `too_large`; told only to the ticket's tenant); then the Idempotency-Key's entry
# (KEYS 10), fingerprint, TTL and nonce (ARGV 7-9) if any. The ticket is taken (the upload is the
# job's now) only when the job is made. Returns {outcome} or {'ok', event id, ticket JSON}.
CREATE_FROM_UPLOAD = (
    """
if redis.call('EXISTS', KEYS[9]) == 1 then return {'paused'} end
local raw = redis.call('HGET', KEYS[7], 'ticket')
if not raw then return {'not_yours'} end
local ticket = cjson.decode(raw)
if ticket.tenant ~= ARGV[4] or redis.call('HEXISTS', KEYS[7], 'job') == 1 then
  return {'not_yours'}
end
if ARGV[6] ~= 'ok' then return {ARGV[6]} end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
local bind = KEYS[10] and {KEYS[10], ARGV[7], ARGV[8], ARGV[9]}
"""
    + _BIND_CHECK.replace("return 'key_taken'", "return {'key_taken'}")
    + """
local fields = cjson.decode(ARGV[1])
redis.call('HSET', KEYS[7], 'job', fields.id)
redis.call('ZREM', KEYS[8], ARGV[5])  -- the job's now: removed with it
fields.source_name = ticket.filename
local flat = {'gen', 1}
"""
    + _CREATE_JOB
    + "return {'ok', id, raw}\n"
)

# KEYS: job hash, job events, the webhook stream (a terminal operation of a job that has a
# webhook_url leaves an entry there for the deliverer), the status counts, the retention set,
# the events feed, then the hand-off's key if any: the stage's three streams (high, normal, low:
# the entry goes to the job's priority), or the delayed set, the dead letters or the control
# stream. ARGV[1]: an operation (protocol.ops.encode, plus maxlen, feed_max, ttl, events_ttl,
# retain_s and shared_max from the store). Returns {outcome, status, event id, attempts, gen}.
TRANSITION = (
    """
local a = cjson.decode(ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'status', 'stage', 'progress', 'outputs', 'owner',
  'lease_until', 'attempts', 'done', 'last_tx', 'last_event', 'gen', 'handed_back', 'id', 'kind',
  'webhook_url', 'tenant', 'priority')
local status = f[1]
if not status then return {'missing', '', '', 0, 0} end
local stage, owner, done = f[2] or '', f[5] or '', f[8] or ''
local progress, attempts, gen = tonumber(f[3]) or 0, tonumber(f[7]) or 0, tonumber(f[11]) or 0
if a.tx == f[9] then return {'ok', status, f[10] or '', attempts, gen} end
local function refuse(outcome, tries) return {outcome, status, '', tries or attempts, gen} end
if not a['from'][status] then return refuse('rejected') end
local function finished(name)
  return string.find(',' .. done .. ',', ',' .. name .. ',', 1, true) ~= nil
end
"""
    + _NOW_MS
    + """
local op = a.op
if op == 'claim' then
  if a.gen >= 0 and a.gen ~= gen then return refuse('stale') end
  if finished(a.stage) then return refuse('done') end
  if owner ~= '' and owner ~= a.owner and (tonumber(f[6]) or 0) > now_ms then
    return refuse('busy')
  end
  local tries
  if f[12] == '1' then  -- handed back at a shutdown: not a new try
    if stage == a.stage and attempts > 0 then tries = attempts else tries = 1 end
  elseif stage == a.stage then
    tries = attempts + 1
  else
    tries = 1
  end
  if a.max_attempts > 0 and tries > a.max_attempts then return refuse('exhausted', tries - 1) end
  attempts, stage = tries, a.stage
  if a.progress > progress then progress = a.progress end
  redis.call('HSET', KEYS[1], 'owner', a.owner, 'lease_until', now_ms + a.lease_ms)
  redis.call('HDEL', KEYS[1], 'handed_back')
elseif op == 'progress' then
  if stage ~= a.stage then return refuse('rejected') end
  if owner ~= a.owner then return refuse('lost') end
  if a.outputs then  -- a stage's early output (a preview): stored whatever the progress
    local outputs = cjson.decode(f[4] or '{}')
    for k, v in pairs(a.outputs) do outputs[k] = v end
    redis.call('HSET', KEYS[1], 'outputs', cjson.encode(outputs))
  elseif a.progress <= progress then
    return refuse('unchanged')
  end
  if a.progress > progress then progress = a.progress end
elseif op == 'finish' then
  if stage ~= a.stage then return refuse('rejected') end
  if owner ~= a.owner then return refuse('lost') end
  if finished(a.stage) then return refuse('done') end
  local outputs = cjson.decode(f[4] or '{}')
  for k, v in pairs(a.outputs) do outputs[k] = v end
  if done == '' then done = stage else done = done .. ',' .. stage end
  redis.call('HSET', KEYS[1], 'outputs', cjson.encode(outputs), 'done', done)
  if a.media ~= '' then redis.call('HSET', KEYS[1], 'media', a.media) end
  if a.progress > progress then progress = a.progress end
  if a.status == 'completed' then stage = '' end
elseif op == 'retry' or op == 'handback' then
  if owner ~= a.owner then return refuse('lost') end
  if op == 'retry' then
    redis.call('HSET', KEYS[1], 'error', a.error)
  else
    redis.call('HSET', KEYS[1], 'handed_back', 1)
  end
elseif op == 'fail' then
  if a.owner ~= '' and owner ~= a.owner then return refuse('lost') end
  redis.call('HSET', KEYS[1], 'error', a.error)
elseif op == 'replay' then
  stage, attempts = '', 0
  redis.call('HSET', KEYS[1], 'error', '')
end
if op ~= 'claim' and op ~= 'progress' then  -- the run lets the stage go
  redis.call('HSET', KEYS[1], 'owner', '', 'lease_until', 0)
end
local p = a.push
if p then
  local job = f[13]
  local priority = f[17] or 'normal'
  if p.kind == 'stage' then
    gen = gen + 1
    local at = ({high = 7, normal = 8, low = 9})[priority] or 8
    redis.call('XADD', KEYS[at], '*', 'job_id', job, 'gen', gen)
  elseif p.kind == 'retry' then
    gen = gen + 1
    redis.call('ZADD', KEYS[7], now_ms + p.delay_ms,
      p.stage .. '|' .. job .. '|' .. gen .. '|' .. priority)
  elseif p.kind == 'dead' then
    redis.call('XADD', KEYS[7], 'MAXLEN', '~', a.shared_max, '*', 'job_id', job, 'stage', p.stage,
      'code', a.code, 'message', a.message, 'attempts', attempts, 'at', a.now,
      'tenant', f[16] or 'default')
  elseif p.kind == 'notice' then
    redis.call('XADD', KEYS[7], 'MAXLEN', '~', a.shared_max, '*', 'action', 'cancel',
      'job_id', job, 'stage', stage)
  end
end
redis.call('HSET', KEYS[1], 'status', a.status, 'stage', stage, 'progress', progress,
  'updated_at', a.now, 'attempts', attempts, 'gen', gen, 'last_tx', a.tx)
local id = ''
if a.event ~= '' then
  local kind = f[14] or 'subtitle'
  id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', a.maxlen, '*', 'event', a.event,
    'status', a.status, 'stage', stage, 'progress', progress, 'at', a.now,
    'attempts', attempts, 'data', a.data, 'kind', kind)
  -- The same event on the shared feed, whole, so a notifier fans it out without reading the
  -- job's history.
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', a.feed_max, '*', 'job_id', f[13], 'id', id,
    'event', a.event, 'status', a.status, 'stage', stage, 'progress', progress, 'at', a.now,
    'attempts', attempts, 'data', a.data, 'kind', kind)
  if a.op == 'replay' then redis.call('HSET', KEYS[1], 'run_from', id) end
end
redis.call('HSET', KEYS[1], 'last_event', id)
if a.status ~= status then
  redis.call('HINCRBY', KEYS[4], status, -1)
  redis.call('HINCRBY', KEYS[4], a.status, 1)
end
if a.ttl > 0 and f[15] and f[15] ~= '' then  -- the job's end, for its webhook
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', a.shared_max, '*', 'job_id', f[13],
    'event', a.event, 'event_id', id)
end
if a.ttl > 0 then  -- ended: removed, outputs and all, after its retention (maintenance)
  redis.call('ZADD', KEYS[5], math.floor(now_ms / 1000) + a.retain_s, f[13])
elseif a.op == 'replay' then  -- running again: kept
  redis.call('ZREM', KEYS[5], f[13])
end
if a.ttl > 0 then
  redis.call('EXPIRE', KEYS[1], a.ttl)
  redis.call('EXPIRE', KEYS[2], a.events_ttl)  -- EVENT_RETENTION_S: a shorter history
else
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
end
return {'ok', a.status, id, attempts, gen}
"""
)

# KEYS: job hash. ARGV: owner, lease in ms. Extends the run's lease if it still holds it.
# Returns 1, or 0 when another run holds the stage, or when nobody does: -1 if the job was
# cancelled, -2 if it went on (or ended) without this run (another run finished the stage).
RENEW = (
    """
local owner, status = unpack(redis.call('HMGET', KEYS[1], 'owner', 'status'))
if owner ~= ARGV[1] then
  if owner and owner ~= '' then return 0 end
  if status == 'cancelled' or not status then return -1 end
  return -2
end
"""
    + _NOW_MS
    + """
redis.call('HSET', KEYS[1], 'lease_until', now_ms + tonumber(ARGV[2]))
return 1
"""
)

# KEYS: the delayed set, then every stage's streams. ARGV: their names as `stage:priority`, in
# the same order. Moves every retry that is due (members `stage|job id|generation|priority`)
# onto its stage's stream at its priority (normal for members written before priorities).
PROMOTE = (
    _NOW_MS
    + """
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
"""
)
