-- Creates a job (JobStore.create): stores it, records its `queued` event (in its history and on
-- the events feed) and hands it to its first stage, in one step.
-- KEYS: 1 the job hash, 2 its events, 3 the first stage's stream, 4 the tenant's jobs, 5 the
--   status counts, 6 the events feed, and 7 the Idempotency-Key entry if any.
-- ARGV: 1 the job's fields (JSON), 2 history maxlen, 3 feed maxlen, then 4 the key's
--   fingerprint, 5 its TTL and 6 the request's nonce if any.
-- Returns the `queued` event's id, '' when the job exists already (a resent request), or
-- 'key_taken' (nothing written) when the key is no longer this request's reservation.
if redis.call('EXISTS', KEYS[1]) == 1 then return '' end
local bind = KEYS[7] and {KEYS[7], ARGV[4], ARGV[5], ARGV[6]}
--#include _bind_check.lua
if key_taken then return 'key_taken' end
local fields = cjson.decode(ARGV[1])
local flat = {'gen', 1}
--#include _create_job.lua
return id
