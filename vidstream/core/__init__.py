"""The plumbing every layer uses, and nothing of vidstream's own above it: settings, errors,
logs, child processes, owned tasks, backoff, component lifecycles, signing, API keys and the
admission of connections. The bottom layer: it imports no other vidstream package."""
