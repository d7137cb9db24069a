"""The job's storage in Redis: every key and stream name (`keys`), the streams and consumer
groups (`bus`, `consumer`), the Lua scripts that apply the protocol atomically (`lua`), the job
store, upload tickets, templates, and the per-request Redis budget."""
