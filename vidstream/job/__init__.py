"""The job itself: its stages, priorities and roles (`stages`), its options (`options`), the
registry of its kinds with the pipeline each runs (`kinds`, `pipelines`), its model (`model`),
the protocol of operations that move it (`protocol`: the one place its life is defined), what a
worker does after an outcome (`policy`) and how a job is shown to its client (`present`).
Pure: no Redis, no subprocess."""
