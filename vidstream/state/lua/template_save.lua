-- Saves a tenant's compose template (state/templates.py), up to a limit per tenant.
-- KEYS: 1 the tenant's templates. ARGV: 1 the name, 2 the JSON, 3 the most a tenant may keep.
-- Returns 1 when it replaced one of that name, 0 when it added one, -1 when the tenant has too
-- many to add one.
local had = redis.call('HEXISTS', KEYS[1], ARGV[1])
if had == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return had
