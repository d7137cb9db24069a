"""A transcribe worker's Whisper pools, one per model its jobs choose (`media.models`).

The default model's pool starts with the worker, so a worker that cannot load it never takes a
job. Another model's pool starts the first time a job asks for it (its load, a second or two for
a small model, is that job's), and then serves every later job that names it. Each pool holds as
many servers as the worker runs jobs at once.
"""

from __future__ import annotations

import asyncio
import dataclasses

from vidstream.core import logs
from vidstream.core.lifecycle import Component
from vidstream.media.models import Catalogue
from vidstream.media.whisper import WhisperConfig, WhisperPool


class Whispers(Component):
    def __init__(self, config: WhisperConfig, models: Catalogue, size: int) -> None:
        self.config = config  # every pool's, but for its model
        self.models = models
        self.size = size
        self._pools: dict[str, WhisperPool] = {}
        self._lock = asyncio.Lock()  # one pool per model, however many jobs ask at once
        self._closed = False
        self.log = logs.get(component="whisper")

    async def start(self) -> None:
        """Load the default model; safe to call twice."""
        await self.pool("")

    async def pool(self, name: str) -> WhisperPool:
        """The started pool of the model `name` ("" the default); `unknown_model` when this
        worker does not have it."""
        model = self.models.get(name)
        found = self._pools.get(model.name)
        if found is not None:
            return found
        async with self._lock:
            if self._closed:
                raise RuntimeError("the Whisper pools are closed")
            if model.name not in self._pools:
                config = dataclasses.replace(self.config, model=model.path, name=model.name)
                pool = WhisperPool(config, self.size)
                await pool.start()
                self._pools[model.name] = pool
            return self._pools[model.name]

    def pids(self) -> list[int]:
        return [pid for pool in self._pools.values() for pid in pool.pids()]

    async def close(self) -> None:
        """Stop every pool's servers; safe to call twice."""
        async with self._lock:
            self._closed = True
            pools, self._pools = list(self._pools.values()), {}
        await asyncio.gather(*(pool.close() for pool in pools))
