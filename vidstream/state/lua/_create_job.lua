-- Included by job_create.lua and job_create_from_upload.lua, not run alone. They set `fields`
-- (the job's fields), `flat` (field-value pairs to write besides them) and `bind` (nil, or the
-- request's Idempotency-Key entry, fingerprint, TTL and nonce, checked by _bind_check.lua), and
-- KEYS 1-6 and ARGV 2-3 as job_create.lua says. Sets `id`, the `queued` event's id.
-- One HSET of all fields. The key is bound to the job in this same step, so no crash between
-- the two lets a resend make a second job.
if bind then
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
