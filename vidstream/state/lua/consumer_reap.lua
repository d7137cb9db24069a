-- Removes a dead worker's consumer from a stage stream's group once nothing is pending under it
-- (ops/maintenance.py). Checked and deleted in one step: an entry read between a check and the
-- deletion would leave the group's pending list with it, never to run.
-- KEYS: 1 the stage stream. ARGV: 1 the consumer, 2 the group.
-- Returns 1 when removed, 0 when entries are still pending under it.
if #redis.call('XPENDING', KEYS[1], ARGV[2], '-', '+', 1, ARGV[1]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[2], ARGV[1])
return 1
