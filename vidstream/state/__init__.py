"""The job's storage in Redis: every key and stream name (`keys`), the streams and consumer
groups (`bus`, `consumer`), every Lua script vidstream runs (`lua/*.lua`, loaded by `scripts`;
the `job_*` ones apply the protocol atomically), the job store, upload tickets, templates, and the
per-request Redis budget."""
