-- Takes a worker slot over from a holder seen dead (actors/slots.py), only if it still holds
-- it: never from a live newcomer that took it meanwhile.
-- KEYS: 1 the slot's lease. ARGV: 1 the dead holder's token, 2 ours, 3 the TTL in seconds.
-- Returns 1 when taken, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
