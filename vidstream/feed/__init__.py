"""Job events to live subscribers: the hub that tails the events feed once per process and fans
each event out to the clients watching its job, resumes from a last event id (or resets), and
notices when the feed lost writes. Shared by the notifier (WebSocket) and the gateway (SSE).

The hub reads through `base.Feed`: `redis.RedisFeed` in the roles, `memory.MemoryFeed` in the
hub's tests (no Redis needed)."""
