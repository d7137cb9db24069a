"""Fan-out: a long source's stage cut into pieces that every worker of the stage, on any host,
works at once (`state.pieces` says how they are kept in Redis).

The run that holds the job's stage coordinates: it cuts the source (once; a run that takes the
stage over goes on with the same pieces and the results already recorded), queues one entry per
piece, then works the first free piece itself, again and again, while other workers take the
rest from their entries. A piece whose worker died is free again once its lease lapses; one that
failed is tried again alone, up to JOB_MAX_ATTEMPTS times. When every piece is done the
coordinator joins the results and finishes the stage as any run does.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import structlog
from redis.exceptions import RedisError

from vidstream.core.backoff import Backoff, retry
from vidstream.core.errors import JobError, PermanentError, TransientError
from vidstream.core.settings import Settings
from vidstream.core.tasks import cancel_and_wait
from vidstream.job.model import Job, Stage
from vidstream.kinds.base import PieceRun, PieceWork, Report, StageRun, Tools
from vidstream.media.cuts import Piece
from vidstream.state.pieces import Held, PieceState, PieceStore, Plan, Taken

POLL_S = 0.5  # how often a coordinator with no free piece looks at the others' (a small read)
RENEW_S = 2.0  # a piece's lease renewal, and its progress, at least this often
EXPIRY_MARGIN_S = 86_400


class PieceLost(Exception):
    """The piece's lease went to another run, or the job no longer runs the stage."""

    def __init__(self, held: Held) -> None:
        super().__init__(held.value)
        self.held = held


def fans_out(settings: Settings, duration_s: float) -> bool:
    """Whether a source this long is cut into pieces (FANOUT_MIN_S; 0 turns fan-out off)."""
    return settings.fanout_min_s > 0 and duration_s >= settings.fanout_min_s


def piece_store(tools: Tools) -> PieceStore:
    services = tools.services
    return PieceStore(services.redis, services.keys, services.jobs.ttl_s + EXPIRY_MARGIN_S)


def lease_ms(settings: Settings) -> int:
    return int(settings.visibility_timeout_s * 750)  # as a stage's (`actors.worker`)


async def hold(
    store: PieceStore, plan: Plan, index: int, owner: str, lease: int,
    work: Callable[[Report], Awaitable[str]], refresh: Callable[[], Awaitable[None]] | None = None,
) -> str:  # fmt: skip
    """Run `work` on a piece leased to `owner`, renewing the lease (with how far the work is)
    until it ends; record its result. Raise `PieceLost` when the piece or the stage went
    elsewhere meanwhile (the work is stopped), or the work's own error."""
    fraction: float | None = 0.0

    async def report(value: float) -> None:
        nonlocal fraction
        fraction = value

    async def keep() -> Held:
        every = min(RENEW_S, lease / 4000)
        while True:
            await asyncio.sleep(every)  # a renewal period, not synchronisation
            try:
                held = await store.renew(plan, index, owner, lease, fraction)
                if refresh is not None:
                    await refresh()
            except RedisError:
                continue  # the lease has three more periods to go
            if held is not Held.HELD:
                return held

    async def working_on() -> str:
        return await work(report)

    working = asyncio.create_task(working_on(), name=f"piece-{plan.job_id}-{index}")
    keeper = asyncio.create_task(keep())
    try:
        await asyncio.wait({working, keeper}, return_when=asyncio.FIRST_COMPLETED)
        if not working.done():
            await cancel_and_wait([working])
            raise PieceLost(keeper.result())
        result = working.result()
    finally:
        await cancel_and_wait([keeper, working])
    held = await retry(
        lambda: store.done(plan, index, owner, result),
        retry_on=(RedisError,), give_up_after_s=lease / 1000, backoff=Backoff(0.25, 1.0),
    )  # fmt: skip
    if held is not Held.HELD:
        raise PieceLost(held)
    return result


def error_of(exc: BaseException) -> dict[str, object]:
    """A piece's failure as recorded: what the coordinator fails the job with, if it must."""
    if isinstance(exc, JobError):
        return {"code": exc.code, "message": exc.message,
                "permanent": isinstance(exc, PermanentError)}  # fmt: skip
    return {"code": "internal_error", "message": "A piece of the job failed.", "permanent": False}


async def fan_out(
    tools: Tools, job: Job, run: StageRun, stage: Stage,
    cut: Callable[[], Awaitable[Sequence[Piece] | None]], work: PieceWork, workdir: Path,
    share: tuple[float, float] = (0.0, 1.0), context: dict[str, Any] | None = None,
) -> tuple[Plan, list[str]] | None:  # fmt: skip
    """Run the job's `stage` as pieces (`cut` says which; None: it cannot be cut) and return
    the plan with each piece's result, in order; None when the source cannot be cut. The
    pieces' progress is the `share` (from, span) of the stage's; every piece's work reads
    `context` (JSON) as the plan recorded it."""
    base, span = share
    s = tools.services.settings
    store, lease = piece_store(tools), lease_ms(s)
    # A run of the stage before this one (which failed, or died) may have cut it: its pieces,
    # and the results recorded, are this run's; those not done get their tries again.
    plan = await store.plan(job.id, stage)
    if plan is None:
        pieces = await cut()
        if not pieces:
            return None
        plan = Plan.new(job.id, stage, pieces, context)
    adopted = await store.adopt(plan, run.owner)
    if adopted is None:
        await run.report(0.0, force=True)  # raises why the run no longer holds the stage
        raise TransientError("The stage was taken over.", code="stage_out_of_order")
    plan = adopted
    states = await store.states(plan)
    await store.queue(plan, [st.index for st in states if not st.done])
    run.log.info("pieces_queued", plan=plan.id, pieces=len(plan.pieces),
                 done=sum(st.done for st in states))  # fmt: skip
    while True:
        states = await store.states(plan)
        _raise_permanent(plan, states)
        if all(st.done for st in states):
            break
        await run.report(base + span * _fraction(plan, states), pieces=_counts(states))
        taken, index, attempt = await store.claim(plan, None, run.owner, lease, s.job_max_attempts)
        if taken is Taken.NONE:
            await asyncio.sleep(POLL_S)  # the others' pieces: a poll of a few small fields
            continue
        if taken is Taken.EXHAUSTED:  # out of tries, failed or its workers lost: the stage too
            raise _failure(plan, states[index])
        if taken is not Taken.OK:
            await run.report(0.0, force=True)
            raise TransientError("The job no longer runs this stage.", code="stage_out_of_order")
        piece = plan.pieces[index]

        log = run.log.bind(piece=index, piece_try=attempt)
        own = _own_progress(run, plan, states, index, share)
        await work_piece(store, tools, job, plan, piece, run.owner, lease, work,
                         workdir / f"piece-{index}", log, progress=own)  # fmt: skip
    await run.report(base + span, pieces=_counts(states))
    return plan, await store.results(plan)


class Ended(StrEnum):
    """How one try of a piece ended."""

    DONE = "done"
    FAILED = "failed"  # recorded: tried again (alone), or the stage fails with it
    LOST = "lost"  # the piece or the stage went elsewhere: nothing recorded


async def work_piece(
    store: PieceStore, tools: Tools, job: Job, plan: Plan, piece: Piece, owner: str, lease: int,
    work: PieceWork, workdir: Path, log: structlog.stdlib.BoundLogger,
    refresh: Callable[[], Awaitable[None]] | None = None, progress: Report | None = None,
) -> Ended:  # fmt: skip
    """Work a piece leased to `owner` and record how it ended: its result, its failure (for
    another try), or its hand-back (the worker is stopping). `progress` hears how far the
    piece is as its work says, besides its lease's renewals."""
    log.info("piece_started", start=piece.start, end=piece.end)
    tag = f"{owner.rpartition(':')[2]}p{piece.index}"
    started = time.monotonic()

    def run_of(report: Report) -> PieceRun:
        async def both(fraction: float) -> None:
            await report(fraction)
            if progress is not None:
                await progress(fraction)

        return PieceRun(piece, workdir, both, log, tag, plan.context)

    try:
        await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
        await hold(store, plan, piece.index, owner, lease,
                   lambda report: work(tools, job, run_of(report)), refresh)  # fmt: skip
    except PieceLost as lost:
        log.warning("piece_lost", reason=lost.held.value)
        return Ended.LOST
    except asyncio.CancelledError:
        with contextlib.suppress(RedisError, TimeoutError):
            async with asyncio.timeout(3.0):
                await asyncio.shield(store.hand_back(plan, piece.index, owner))
        raise
    except Exception as exc:
        error = error_of(exc)
        if isinstance(exc, JobError):
            log.warning("piece_failed", code=error["code"], error=error["message"])
        else:
            log.error("piece_crashed", exc_info=exc)
        with contextlib.suppress(RedisError):
            await store.failed(plan, piece.index, owner, error)
        return Ended.FAILED
    finally:
        await asyncio.to_thread(_remove, workdir)
    log.info("piece_done", took_s=round(time.monotonic() - started, 3))
    return Ended.DONE


def _own_progress(
    run: StageRun, plan: Plan, states: list[PieceState], index: int, share: tuple[float, float]
) -> Report:
    """The stage's progress as the run's own piece moves (not only as the others' do)."""

    async def report(fraction: float) -> None:
        now = [replace(st, fraction=fraction) if st.index == index else st for st in states]
        await run.report(share[0] + share[1] * _fraction(plan, now), pieces=_counts(now))

    return report


def _raise_permanent(plan: Plan, states: Sequence[PieceState]) -> None:
    """Fail the stage with a piece's error that running it again cannot help."""
    for st in states:
        if not st.done and st.error is not None and st.error.get("permanent"):
            raise _failure(plan, st)


def _failure(plan: Plan, st: PieceState) -> JobError:
    """What a piece's last failure means for the stage, naming the piece."""
    error = st.error or {"code": "worker_lost", "message": "The piece's workers stopped."}
    piece = plan.pieces[st.index]
    where = f"piece {st.index + 1} of {len(plan.pieces)}, {_clock(piece.start)}-{_clock(piece.end)}"
    message, code = f"{error.get('message')} ({where})", str(error.get("code") or "internal_error")
    if error.get("permanent"):
        return PermanentError(message, code=code)
    return TransientError(message, code=code)


def _fraction(plan: Plan, states: Sequence[PieceState]) -> float:
    total = sum(p.seconds for p in plan.pieces) or 1.0
    done = sum(p.seconds * (1.0 if st.done else st.fraction)
               for p, st in zip(plan.pieces, states, strict=True))  # fmt: skip
    return min(done / total, 0.999)


def _counts(states: Sequence[PieceState]) -> tuple[int, int]:
    return sum(st.done for st in states), len(states)


def _clock(seconds: float) -> str:
    if seconds == math.inf:
        return "end"
    whole = int(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
