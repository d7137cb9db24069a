-- Writes a batch of a job's log lines (ops/joblogs.py), only for a job that exists; the lines
-- expire with the job (or after the TTL given while the job has none).
-- KEYS: 1 the job hash, 2 its log stream.
-- ARGV: 1 the most lines kept, 2 the TTL in seconds while the job has none, then six values per
--   line: at, level, event, stage, role, fields.
-- Returns the number of lines written.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 3, #ARGV, 6 do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'at', ARGV[i], 'level', ARGV[i + 1],
    'event', ARGV[i + 2], 'stage', ARGV[i + 3], 'role', ARGV[i + 4], 'fields', ARGV[i + 5])
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
else
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return (#ARGV - 2) / 6
