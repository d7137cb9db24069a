-- Deletes a key only while it still holds our token: a worker slot's lease released
-- (actors/slots.py), an Idempotency-Key's reservation freed (http/idempotency.py); once a job is
-- bound to that key (even by a step whose answer was lost), it stays.
-- KEYS: 1 the key. ARGV: 1 our token.
-- Returns 1 when deleted, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
