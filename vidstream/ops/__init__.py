"""Operations: what keeps a deployment running for months and tells an operator how it is:
retention, pausing, maintenance, dead letters, statistics, the workers registry, metrics, the
job logs kept in Redis, admin commands, and the private Redis of `vidstream dev`."""
