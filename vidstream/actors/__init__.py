"""Stage actors: each consumes one Redis stream through a consumer group."""
