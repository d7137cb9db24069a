-- Takes an upload's ticket for a job (state/tickets.py): one job per upload key, however many
-- try, and only the tenant that was given the key.
-- KEYS: 1 the ticket, 2 the abandoned-uploads index. ARGV: 1 the tenant, 2 the job id, 3 the
--   upload's key.
-- Returns the ticket's JSON when it is the tenant's and unused, marking it used by the job;
-- else nil.
local raw = redis.call('HGET', KEYS[1], 'ticket')
if not raw then return false end
if cjson.decode(raw).tenant ~= ARGV[1] then return false end
if redis.call('HSETNX', KEYS[1], 'job', ARGV[2]) == 0 then return false end
redis.call('ZREM', KEYS[2], ARGV[3])  -- the job's now: removed with it
return raw
