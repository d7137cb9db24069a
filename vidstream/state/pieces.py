"""The pieces of a fanned-out stage in Redis: its plan, and each piece's lease, tries, progress
and result, in one hash per job (`Keys.job_pieces`); one entry per piece on the stage's piece
stream (`Keys.piece_stream`), which any worker of the stage, on any host, may take.

The run that holds the job's stage (the coordinator) records the plan, queues the pieces,
works pieces itself while any is free, and joins the results. Every piece is leased like a
stage is: a worker renews its lease while it works; a lease that lapses (the worker died or was
cut off) frees the piece for another; and only the lease's holder may record its end, so a late
worker writes nothing. Every step checks that the job still runs the stage: a cancel, a failure
or another run finishing the stage ends every piece.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from vidstream.job.model import Stage
from vidstream.media.cuts import Piece, pieces_from_json, pieces_to_json
from vidstream.state import scripts
from vidstream.state.keys import Keys


@dataclass(frozen=True, slots=True)
class Plan:
    """How a stage of one job is cut: `id` tells its pieces' entries from an older plan's."""

    job_id: str
    stage: Stage
    id: str
    pieces: tuple[Piece, ...]
    # What every piece's work reads as the coordinator decided it (which transcript, the
    # source's media info): the same for all, wherever they run.
    context: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        pieces = pieces_to_json(self.pieces)
        return json.dumps({"id": self.id, "pieces": pieces, "context": self.context})

    @classmethod
    def from_json(cls, job_id: str, stage: Stage, raw: str) -> Plan:
        doc = json.loads(raw)
        pieces = pieces_from_json(doc["pieces"])
        return cls(job_id, stage, str(doc["id"]), pieces, dict(doc.get("context") or {}))

    @classmethod
    def new(
        cls, job_id: str, stage: Stage, pieces: Sequence[Piece],
        context: dict[str, Any] | None = None,
    ) -> Plan:  # fmt: skip
        return cls(job_id, stage, secrets.token_hex(6), tuple(pieces), dict(context or {}))


class Taken(StrEnum):
    """What a claim of a piece found (`piece_claim.lua`)."""

    OK = "ok"
    GONE = "gone"  # the job no longer runs the stage
    STALE = "stale"  # the entry is of another plan
    DONE = "done"
    BUSY = "busy"  # another run holds it
    EXHAUSTED = "exhausted"  # out of tries
    NONE = "none"  # no piece is free


class Held(StrEnum):
    HELD = "held"
    TAKEN = "taken"  # another run holds the piece, or it is done
    GONE = "gone"  # the job no longer runs the stage


_HELD = {1: Held.HELD, 0: Held.TAKEN, -1: Held.GONE}


@dataclass(frozen=True, slots=True)
class PieceState:
    index: int
    done: bool
    owner: str
    fraction: float
    tries: int
    error: dict[str, Any] | None  # {code, message, permanent} of its last failure


class PieceStore:
    def __init__(self, redis: Redis, keys: Keys, ttl_s: int) -> None:
        self.redis, self.keys, self.ttl_s = redis, keys, ttl_s
        self._plan = scripts.register(redis, "piece_plan")
        self._claim = scripts.register(redis, "piece_claim")
        self._renew = scripts.register(redis, "piece_renew")
        self._end = scripts.register(redis, "piece_end")

    def _keys(self, job_id: str) -> list[str]:
        return [self.keys.job_pieces(job_id), self.keys.job(job_id)]

    async def plan(self, job_id: str, stage: Stage) -> Plan | None:
        """The plan recorded for the stage, if any."""
        raw = await self.redis.hget(self.keys.job_pieces(job_id), stage.value)
        return None if raw is None else Plan.from_json(job_id, stage, str(raw))

    async def adopt(self, plan: Plan, owner: str) -> Plan | None:
        """Record `plan` unless one is recorded already; the plan in force, or None when
        `owner` no longer holds the stage."""
        raw = await self._plan(
            keys=self._keys(plan.job_id),
            args=[plan.stage.value, owner, plan.to_json(), self.ttl_s],
        )
        return Plan.from_json(plan.job_id, plan.stage, str(raw)) if raw else None

    async def queue(self, plan: Plan, indexes: Sequence[int]) -> None:
        """One entry per piece on the stage's piece stream."""
        if not indexes:
            return
        stream = self.keys.piece_stream(plan.stage)
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in indexes:
                fields = {"job_id": plan.job_id, "plan": plan.id, "piece": str(i)}
                pipe.xadd(stream, fields)  # type: ignore[arg-type]
            await pipe.execute()

    async def claim(
        self, plan: Plan, index: int | None, owner: str, lease_ms: int, max_tries: int
    ) -> tuple[Taken, int, int]:
        """Lease piece `index` (the first free one if None) to `owner`: (what was found, the
        piece's index, its try)."""
        raw = await self._claim(
            keys=self._keys(plan.job_id),
            args=[plan.stage.value, plan.id, "" if index is None else index, owner, lease_ms,
                  max_tries, len(plan.pieces)],
        )  # fmt: skip
        answer = [str(x) for x in raw]
        if answer[0] == Taken.EXHAUSTED and len(answer) > 1:  # the piece the stage waits for
            return Taken.EXHAUSTED, int(answer[1]), 0
        if answer[0] != Taken.OK:
            return Taken(answer[0]), -1, 0
        return Taken.OK, int(answer[1]), int(answer[2])

    async def renew(
        self, plan: Plan, index: int, owner: str, lease_ms: int, fraction: float | None = None
    ) -> Held:
        frac = "" if fraction is None else f"{min(max(fraction, 0.0), 1.0):.4f}"
        raw = await self._renew(
            keys=self._keys(plan.job_id), args=[plan.stage.value, index, owner, lease_ms, frac]
        )
        return _HELD[int(raw)]

    async def done(self, plan: Plan, index: int, owner: str, result: str) -> Held:
        return await self._finish(plan, index, owner, "done", result)

    async def failed(self, plan: Plan, index: int, owner: str, error: dict[str, Any]) -> Held:
        return await self._finish(plan, index, owner, "failed", json.dumps(error))

    async def hand_back(self, plan: Plan, index: int, owner: str) -> Held:
        return await self._finish(plan, index, owner, "back", "")

    async def _finish(self, plan: Plan, index: int, owner: str, how: str, value: str) -> Held:
        raw = await self._end(
            keys=self._keys(plan.job_id), args=[plan.stage.value, index, owner, how, value]
        )
        return _HELD[int(raw)]

    async def states(self, plan: Plan) -> list[PieceState]:
        """Where each piece of `plan` stands (without its result: `results`)."""
        key, names = self.keys.job_pieces(plan.job_id), ("owner", "frac", "tries", "error")
        async with self.redis.pipeline(transaction=False) as pipe:
            for piece in plan.pieces:
                p = f"{plan.stage.value}:{piece.index}:"
                pipe.hmget(key, [p + name for name in names])
                pipe.hstrlen(key, p + "done")
            raw = await pipe.execute()
        found = []
        for piece, (fields, done) in zip(
            plan.pieces, zip(raw[::2], raw[1::2], strict=True), strict=True
        ):
            owner, frac, tries, error = fields
            found.append(PieceState(
                piece.index, int(done) > 0, owner or "", float(frac or 0.0), int(tries or 0),
                json.loads(error) if error else None,
            ))  # fmt: skip
        return found

    async def results(self, plan: Plan) -> list[str]:
        """Each piece's result, in order ("" for a piece not done)."""
        key = self.keys.job_pieces(plan.job_id)
        fields = [f"{plan.stage.value}:{piece.index}:done" for piece in plan.pieces]
        return [str(value or "") for value in await self.redis.hmget(key, fields)]

    async def forget(self, job_id: str, stage: Stage) -> None:
        """The stage is finished: its plan and pieces go (retention deletes the hash with the
        job otherwise)."""
        key = self.keys.job_pieces(job_id)
        prefix = f"{stage.value}:"
        fields = [f for f in await self.redis.hkeys(key) if str(f).startswith(prefix)]
        await self.redis.hdel(key, stage.value, *fields)
