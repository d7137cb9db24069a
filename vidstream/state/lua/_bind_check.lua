-- Included by job_create.lua and job_create_from_upload.lua before they write anything, not run
-- alone. They set `bind`: nil, or the request's Idempotency-Key entry, fingerprint, TTL and the
-- request's nonce. The key must still be this request's reservation (`pending <nonce>
-- <fingerprint>`), or have lapsed with nobody else's in its place; else nothing is made: a
-- second request with the key reserved it, or made its job, after this one's lapsed.
-- Sets `key_taken`.
local key_taken = false
if bind then
  local held = redis.call('GET', bind[1])
  key_taken = held and held ~= 'pending ' .. bind[4] .. ' ' .. bind[2]
end
