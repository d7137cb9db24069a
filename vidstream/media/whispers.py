"""A transcribe worker's Whisper pools, one per model its jobs choose (`media.models`).

The default model's pool starts with the worker, so a worker that cannot load it never takes a
job. Another model's pool starts the first time a job asks for it (its load, a second or two for
a small model, is that job's wait), and then serves every later job that names it. Each pool
holds as many servers as the worker runs jobs at once. A load goes on when the job that started
it is cancelled (the next job asking gets the pool); one that fails is tried again by the next
job; `close` stops loads and pools alike, so no server outlives the worker.
"""

from __future__ import annotations

import asyncio
import dataclasses

from vidstream.core import logs
from vidstream.core.lifecycle import Component
from vidstream.core.tasks import cancel_and_wait
from vidstream.media.models import Catalogue, ModelInfo
from vidstream.media.whisper import WhisperConfig, WhisperPool


class Whispers(Component):
    def __init__(self, config: WhisperConfig, models: Catalogue, size: int) -> None:
        self.config = config  # every pool's, but for its model
        self.models = models
        self.size = size
        self._loads: dict[str, asyncio.Task[WhisperPool]] = {}  # by model name
        self._closed = False
        self.log = logs.get(component="whisper")

    async def start(self) -> None:
        """Load the default model; safe to call twice."""
        await self.pool("")

    async def pool(self, name: str) -> WhisperPool:
        """The started pool of the model `name` ("" the default); `unknown_model` when this
        worker does not offer it."""
        model = self.models.get(name)
        load = self._loads.get(model.name)
        if load is None or (load.done() and (load.cancelled() or load.exception())):
            if self._closed:
                raise RuntimeError("the Whisper pools are closed")
            load = asyncio.create_task(self._load(model), name=f"whisper-load-{model.name}")
            self._loads[model.name] = load
        # Shielded: a cancelled job leaves the load to finish for the jobs after it.
        return await asyncio.shield(load)

    async def _load(self, model: ModelInfo) -> WhisperPool:
        config = dataclasses.replace(self.config, model=model.path, name=model.name)
        pool = WhisperPool(config, self.size)
        try:
            await pool.start()
        except BaseException:
            await asyncio.shield(pool.close())
            raise
        return pool

    def _pools(self) -> list[WhisperPool]:
        return [
            load.result()
            for load in self._loads.values()
            if load.done() and not load.cancelled() and load.exception() is None
        ]

    def pids(self) -> list[int]:
        return [pid for pool in self._pools() for pid in pool.pids()]

    async def close(self) -> None:
        """Stop every load and every pool's servers; safe to call twice."""
        self._closed = True
        await cancel_and_wait([load for load in self._loads.values() if not load.done()])
        pools = self._pools()
        self._loads.clear()
        await asyncio.gather(*(pool.close() for pool in pools))
