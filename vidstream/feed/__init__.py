"""Job events to live subscribers: the hub that tails the events feed once per process and fans
each event out to the clients watching its job, resumes from a last event id (or resets), and
notices when Redis lost writes. Shared by the notifier (WebSocket) and the gateway (SSE)."""
