-- Looks at the events feed for the hub (feed/redis.py, read by feed/lost.py): what tells
-- whether it went back, or was trimmed past the hub's cursor. A few
-- numbers where XINFO STREAM would bring the first and last entries whole (a script cost the
-- hub 230 CPU µs a look against 375 for XINFO and XRANGE pipelined).
-- KEYS: 1 the feed. ARGV: 1 the hub's cursor.
-- Returns {0} when the feed is gone, else {1, its last generated id, entries ever added, its
-- oldest entry's id or '', 1 if the cursor's entry is there}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local out = {1, '0-0', 0, '', 0}
for i = 1, #info, 2 do
  local name = info[i]
  if name == 'last-generated-id' then out[2] = info[i + 1]
  elseif name == 'entries-added' then out[3] = info[i + 1]
  elseif name == 'first-entry' and info[i + 1] then out[4] = info[i + 1][1] end
end
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1], 'COUNT', 1) > 0 then out[5] = 1 end
return out
