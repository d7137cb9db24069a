-- Whether this is the first upload to a ticket's link (state/tickets.py): a link uploads once.
-- KEYS: 1 the ticket.
-- Returns 1 the first time, 0 after (or once the ticket expired).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HSETNX', KEYS[1], 'put', 1)
