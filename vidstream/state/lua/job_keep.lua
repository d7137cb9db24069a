-- Keeps an ended job at least until a time (JobStore.keep), for another job that reads what it
-- owns: never shorter, and never once it is due, when retention may be deleting its files.
-- KEYS: 1 the retention set, 2 the job hash, 3 its owned objects.
-- ARGV: 1 the job id, 2 keep until (Unix s), 3 now (Unix s: retention's clock), 4 the hash's
--   backstop TTL (s), 5 the objects set's.
-- Returns 1 when kept, 0 when the job is not waiting for its removal, or is due already.
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not due or tonumber(due) <= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', 'GT', ARGV[2], ARGV[1])
-- The backstops follow (each a day after its removal): a record that expired first would leave
-- its objects behind, which retention finds through it.
redis.call('EXPIRE', KEYS[2], ARGV[4], 'GT')
redis.call('EXPIRE', KEYS[3], ARGV[5], 'GT')
return 1
