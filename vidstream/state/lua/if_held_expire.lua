-- Extends a key's TTL only while it still holds our token: a worker slot's lease
-- (actors/slots.py), an Idempotency-Key's reservation (http/idempotency.py).
-- KEYS: 1 the key. ARGV: 1 our token, 2 the TTL in seconds.
-- Returns 1, or 0 when the key holds another value (or is gone).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 0
