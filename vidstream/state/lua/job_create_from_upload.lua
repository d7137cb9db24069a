-- Creates a job whose source is an upload, in one round trip (the gateway's hot path): as
-- job_create.lua, once the upload's ticket is taken (the upload is the job's now).
-- KEYS: 1-6 as job_create.lua, 7 the upload's ticket, 8 the abandoned-uploads index, 9 the
--   gateway's pause flag, and 10 the Idempotency-Key entry if any.
-- ARGV: 1-3 as job_create.lua, 4 the tenant, 5 the upload's key, 6 what the storage check found
--   (`ok`, `missing`, `too_large`; told only to the ticket's tenant), then 7 the key's
--   fingerprint, 8 its TTL and 9 the request's nonce if any.
-- Returns {outcome} (protocol.schema.Intake; `key_taken` as job_create.lua) or {'ok', event id,
-- ticket JSON}.
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
--#include _bind_check.lua
if key_taken then return {'key_taken'} end
local fields = cjson.decode(ARGV[1])
redis.call('HSET', KEYS[7], 'job', fields.id)
redis.call('ZREM', KEYS[8], ARGV[5])  -- the job's now: removed with it
fields.source_name = ticket.filename
local flat = {'gen', 1}
--#include _create_job.lua
return {'ok', id, raw}
