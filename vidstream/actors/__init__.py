"""Stage actors: the transcribe and render workers. Each reads its stage's streams (one per
priority) through a consumer group, claims a stage with a lease, runs it and records the
outcome (`worker`, `execute`, `run`)."""
