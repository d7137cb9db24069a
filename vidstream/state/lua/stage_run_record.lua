-- Records a stage run as it ends, for the operating numbers (ops/stats.py), keyed by Redis
-- time like every other time vidstream compares across machines; keeps the window's newest.
-- KEYS: 1 the stage's runs (a sorted set). ARGV: 1 the run (`seconds|outcome|nonce`), 2 the
--   window in ms, 3 the most runs kept.
-- Returns the time recorded (ms).
--#include _now_ms.lua
redis.call('ZADD', KEYS[1], now_ms, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - tonumber(ARGV[2]))
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[3]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return now_ms
