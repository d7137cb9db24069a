-- Removes an ended job that is due, with everything it left in Redis (ops/retention.py); does
-- nothing to a job replayed meanwhile (it left the retention set).
-- KEYS: 1 the retention set, 2 the job hash, 3 its events, 4 its logs, 5 its tenant's listing,
--   6 the status counts, 7 its Idempotency-Key entry (or the job hash again when it has none),
--   8 its owned objects, 9 its pieces.
-- ARGV: 1 the job id, 2 now (Unix time, s).
-- Returns 1 when removed, 0 when not due.
-- The idempotency entry goes only while it still names this job: after its own 24 h the tenant
-- may have sent the same Idempotency-Key again, binding it to a new job.
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not due or tonumber(due) > tonumber(ARGV[2]) then return 0 end
local status = redis.call('HGET', KEYS[2], 'status')
if status then redis.call('HINCRBY', KEYS[6], status, -1) end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[8], KEYS[9])
if KEYS[7] ~= KEYS[2] then
  local bound = redis.call('GET', KEYS[7])
  if bound and string.sub(bound, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
    redis.call('DEL', KEYS[7])
  end
end
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
