"""The job itself: its model (kinds, options, stages, statuses), the pipeline each kind runs,
the protocol of operations that move it (`protocol`: the one place its life is defined), what a
worker does after an outcome (`policy`) and how a job is shown to its client (`present`).
Pure: no Redis, no subprocess."""
