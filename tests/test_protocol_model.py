"""The job protocol, model-checked: random sequences of operations (claims by several workers,
lapsed leases, retries, cancels, replays, duplicate deliveries, hand-backs, resends) applied to
the real Lua scripts on the test Redis and to the pure reference model side by side. After every
step both must agree on everything (the job hash, its events, the stage streams, the delayed set,
the dead letters and the cancel notices), and the protocol's invariants must hold."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis

from tests.conftest import REDIS_URL
from vidstream.job.kinds import ComposeOptions
from vidstream.job.model import (
    TERMINAL,
    ErrorInfo,
    Job,
    Kind,
    Options,
    Output,
    Priority,
    Stage,
    Status,
)
from vidstream.job.pipelines import pipeline_of
from vidstream.job.protocol import (
    Cancel,
    Claim,
    Fail,
    FinishStage,
    HandBack,
    Op,
    Outcome,
    Progress,
    PushKind,
    Replay,
    Retry,
)
from vidstream.job.protocol.model import Step, apply
from vidstream.state import bus
from vidstream.state.jobstore import Applied, JobStore
from vidstream.state.keys import Keys

T = TypeVar("T")
LEASE_MS = 600_000  # live until the machine lets leases lapse
MAX_ATTEMPTS = 3
ERROR = ErrorInfo("ffmpeg_failed", "FFmpeg crashed")
# Fields whose exact value depends on the clock or on Redis-assigned ids; compared otherwise.
CLOCKED = {"updated_at", "lease_until", "last_event", "run_from"}
# Ending the job is drawn rarely, so that most sequences get deep into retries and hand-offs.
RARE = st.integers(0, 14).map(lambda n: n == 0)
SOMETIMES = st.integers(0, 2).map(lambda n: n == 0)


@dataclass
class RunRef:
    owner: str
    stage: Stage


@dataclass
class World:
    """What the model says Redis holds."""

    job: dict[str, str]
    events: list[dict[str, str]]
    streams: dict[Stage, list[tuple[str, str]]] = field(default_factory=dict)
    delayed: set[str] = field(default_factory=set)
    dead: list[tuple[str, str]] = field(default_factory=list)
    notices: int = 0
    webhooks: list[str] = field(default_factory=list)  # the events that ended the job
    expiring: bool = False


def _entry(event: dict[str, str]) -> dict[str, Any]:
    return {
        "event": event["event"], "status": event["status"], "stage": event["stage"],
        "progress": float(event["progress"]), "attempts": int(event["attempts"]),
        "data": json.loads(event["data"]) if event["data"] else {}, "kind": event["kind"],
    }  # fmt: skip


def _fields(job: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in job.items():
        if name in CLOCKED:
            continue
        if name == "progress":
            out[name] = float(value)
        elif name in ("outputs", "media") and value:
            out[name] = json.loads(value)
        else:
            out[name] = value
    return out


def make_machine(prefix: str) -> type[RuleBasedStateMachine]:
    class ProtocolMachine(RuleBasedStateMachine):
        runs = Bundle("runs")

        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.redis = Redis.from_url(REDIS_URL, decode_responses=True)
            ProtocolMachine.count += 1
            self.keys = Keys(f"{prefix}:m{ProtocolMachine.count}")
            self.store = JobStore(self.redis, self.keys, ttl_s=3600)
            self.world: World | None = None
            self.last_op: Op | None = None
            self.nonce = 0
            self.frozen: dict[str, str] | None = None  # a completed or cancelled job's hash

        count = 0

        def run(self, coro: Coroutine[Any, Any, T]) -> T:
            return self.loop.run_until_complete(coro)

        def teardown(self) -> None:
            async def clean() -> None:
                keys = [k async for k in self.redis.scan_iter(match=self.keys.pattern())]
                if keys:
                    await self.redis.delete(*keys)
                await self.redis.aclose()

            self.run(clean())
            self.loop.close()

        # -- the job ------------------------------------------------------------------------

        @property
        def w(self) -> World:
            assert self.world is not None
            return self.world

        @property
        def job(self) -> Job:
            return Job.from_redis(self.w.job)

        @initialize(
            kind=st.sampled_from(Kind), burn=st.booleans(), hooked=st.booleans(),
            priority=st.sampled_from(Priority),
        )  # fmt: skip
        def create(self, kind: Kind, burn: bool, hooked: bool, priority: Priority) -> None:
            hook = "https://example.com/hook" if hooked else ""
            # A compose job transcribes first when asked (burn stands in for the choice).
            options: Options = Options(burn_subtitles=burn)
            if kind is Kind.COMPOSE:
                options = ComposeOptions(transcribe="voice" if burn else "")
            job = Job.new("uploads/x/clip.mp4", options, kind=kind, webhook_url=hook)
            job = job.with_changes(priority=priority)
            self.run(self.store.create(job))
            first = pipeline_of(job).first
            self.world = World(
                job={**job.to_redis(), "gen": "1"},
                events=[
                    {
                        "event": "queued",
                        "status": "queued",
                        "stage": "",
                        "progress": "0.0",
                        "attempts": "0",
                        "data": "",
                        "kind": kind.value,
                    }
                ],
                streams={first: [(job.id, "1")]},
            )

        def step(self, op: Op) -> tuple[Applied, Step]:
            """Apply `op` to Redis and to the model; both must answer alike."""
            before = dict(self.w.job)
            applied = self.run(self.store.apply(before["id"], op))
            model = apply(before, op, int(time.time() * 1000), time.time())
            assert (applied.outcome, applied.status, applied.attempts, applied.gen) == (
                model.outcome, model.status, model.attempts, model.gen,
            ), op  # fmt: skip
            self.last_op = op
            if model.outcome is Outcome.OK and not model.resent:
                self._advance(model)
            return applied, model

        def _advance(self, step: Step) -> None:
            w = self.w
            w.job.update(step.writes)
            for name in step.deletes:
                w.job.pop(name, None)
            if step.event is not None:
                w.events.append(step.event)
            w.expiring = step.expire
            if step.webhook:
                assert step.event is not None
                w.webhooks.append(step.event["event"])
            push = step.push
            if push is None:
                return
            job_id, gen = w.job["id"], w.job["gen"]
            if push.kind is PushKind.STAGE:
                assert push.stage is not None
                w.streams.setdefault(push.stage, []).append((job_id, gen))
            elif push.kind is PushKind.RETRY:
                w.delayed.add(f"{push.stage}|{job_id}|{gen}|{w.job['priority']}")
            elif push.kind is PushKind.DEAD:
                w.dead.append((job_id, str(push.stage)))
            else:
                w.notices += 1

        def owner(self) -> str:
            self.nonce += 1
            return f"worker-{self.nonce % 3}:{self.nonce}"

        # -- workers ------------------------------------------------------------------------

        @rule(target=runs, data=st.data())
        def deliver(self, data: st.DataObject) -> RunRef:
            """A worker reads an entry (new, reclaimed, or a duplicate) and claims its stage."""
            entries = [(s, g) for s, items in self.w.streams.items() for _, g in items]
            newest = max(entries, key=lambda e: int(e[1]))
            # Mostly the newest entry; sometimes an older one: a duplicate or stale delivery.
            stage, gen = data.draw(st.one_of(st.just(newest), st.sampled_from(entries)))
            ref = RunRef(self.owner(), stage)
            claim = Claim.of(self.job, stage, owner=ref.owner, lease_ms=LEASE_MS,
                             max_attempts=MAX_ATTEMPTS, gen=int(gen))  # fmt: skip
            held = self.w.job.get("owner", "") != "" and int(self.w.job.get("lease_until", 0)) > 0
            _, model = self.step(claim)
            if model.outcome is Outcome.OK:
                assert not held, "a claim never takes a live lease: at most one owner"
            return ref

        def by_run(self, ref: RunRef, op: Op) -> None:
            owner_before = self.w.job.get("owner", "")
            _, model = self.step(op)
            if model.outcome is Outcome.OK and not model.resent:
                assert owner_before == ref.owner, "only the run holding the stage may change it"

        @rule(ref=st.none() | runs, fraction=st.sampled_from([0.0, 0.5, 1.0]) | st.floats(0, 1))
        def report(self, ref: RunRef | None, fraction: float) -> None:
            """Progress from any run; mostly (None) from the one holding the stage now."""
            if ref is None:
                if not self.w.job.get("owner"):
                    return
                ref = RunRef(self.w.job["owner"], Stage(self.w.job["stage"]))
            self.by_run(ref, Progress.of(self.job, ref.stage, fraction, owner=ref.owner))

        @rule(ref=st.none() | runs, fraction=st.floats(0, 1))
        def preview(self, ref: RunRef | None, fraction: float) -> None:
            """Progress carrying an early output (a compose job's preview)."""
            if ref is None:
                if not self.w.job.get("owner"):
                    return
                ref = RunRef(self.w.job["owner"], Stage(self.w.job["stage"]))
            early = {"preview": Output("out/preview", 1, "video/mp4")}
            op = Progress.of(self.job, ref.stage, fraction, owner=ref.owner, outputs=early)
            self.by_run(ref, op)

        @rule(ref=consumes(runs))
        def finish(self, ref: RunRef) -> None:
            if ref.stage in pipeline_of(self.job).stages:
                outputs = {ref.stage.value: Output(f"out/{ref.stage}", 1, "application/json")}
                self.by_run(ref, FinishStage.of(self.job, ref.stage, outputs, owner=ref.owner))

        @rule(ref=consumes(runs), delay=st.sampled_from([0.0, 60.0]))
        def retry(self, ref: RunRef, delay: float) -> None:
            op = Retry(stage=ref.stage, owner=ref.owner, error=ERROR, attempt=1, delay_s=delay)
            self.by_run(ref, op)

        @rule(ref=consumes(runs), dead=st.booleans(), rare=RARE)
        def fail(self, ref: RunRef, dead: bool, rare: bool) -> None:
            if rare:
                stage = ref.stage if dead else None
                self.by_run(ref, Fail(error=ERROR, owner=ref.owner, dead_letter=stage))

        @rule(ref=consumes(runs), sometimes=SOMETIMES)
        def hand_back(self, ref: RunRef, sometimes: bool) -> None:
            if sometimes:
                self.by_run(ref, HandBack(stage=ref.stage, owner=ref.owner))

        @rule(stage=st.sampled_from(Stage), rare=RARE)
        def dead_letter_exhausted(self, stage: Stage, rare: bool) -> None:
            """After an `exhausted` claim the worker fails the job without holding it."""
            if rare:
                self.step(Fail(error=ERROR, dead_letter=stage))

        # -- users and time -----------------------------------------------------------------

        @rule(rare=RARE)
        def cancel(self, rare: bool) -> None:
            if rare:
                self.step(Cancel())

        @rule(rare=RARE)
        def replay(self, rare: bool) -> None:
            if rare or self.w.job["status"] == "failed":
                self.step(Replay.of(self.job))

        @rule()
        def resend(self) -> None:
            """The last operation again, same id, as after a lost reply: nothing changes."""
            if self.last_op is not None:
                self.step(self.last_op)

        @rule(sometimes=SOMETIMES)
        def leases_lapse(self, sometimes: bool) -> None:
            """Time passes without a heartbeat: every lease runs out (its worker died)."""
            if not sometimes:
                return
            self.run(self.redis.hset(self.keys.job(self.w.job["id"]), "lease_until", 0))
            self.w.job["lease_until"] = "0"

        @rule()
        def retries_fall_due(self) -> None:
            members = self.run(self.redis.zrange(self.keys.delayed, 0, -1))
            if members:
                self.run(self.redis.zadd(self.keys.delayed, dict.fromkeys(members, 0)))
            assert self.run(self.store.promote_due()) == len(self.w.delayed)
            for member in sorted(self.w.delayed):
                stage, job_id, gen, _ = member.split("|")
                self.w.streams.setdefault(Stage(stage), []).append((job_id, gen))
            self.w.delayed.clear()

        # -- after every step ---------------------------------------------------------------

        @invariant()
        def redis_matches_the_model(self) -> None:
            w, keys, job_id = self.w, self.keys, self.w.job["id"]
            raw = self.run(self.redis.hgetall(keys.job(job_id)))
            assert _fields(raw) == _fields(w.job)
            events = self.run(bus.history(self.redis, keys.job_events(job_id)))
            assert [_entry(f) for _, f in events] == [_entry(e) for e in w.events]
            priority = Priority(w.job["priority"])
            for stage in Stage:
                for other in Priority:
                    stream = keys.stage_stream(stage, other)
                    entries = self.run(bus.history(self.redis, stream))
                    expected = w.streams.get(stage, []) if other is priority else []
                    assert [(f["job_id"], f["gen"]) for _, f in entries] == expected, stream
            assert set(self.run(self.redis.zrange(keys.delayed, 0, -1))) == w.delayed
            dead = self.run(bus.history(self.redis, keys.dead_letters))
            assert [(f["job_id"], f["stage"]) for _, f in dead] == w.dead
            assert self.run(self.redis.xlen(keys.control)) == w.notices
            hooks = self.run(bus.history(self.redis, keys.webhooks))
            assert [f["event"] for _, f in hooks] == w.webhooks
            assert (self.run(self.redis.ttl(keys.job(job_id))) > 0) == w.expiring
            # One job: the counts say its status, and it is due for removal once it ended.
            counts = {
                k: int(v) for k, v in self.run(self.redis.hgetall(keys.status_counts)).items()
            }
            assert {k: v for k, v in counts.items() if v} == {w.job["status"]: 1}
            due = self.run(self.redis.zscore(keys.retention, job_id))
            assert (due is not None) == w.expiring

        @invariant()
        def the_protocol_holds(self) -> None:
            w = self.w
            status = Status(w.job["status"])
            progress = [float(e["progress"]) for e in w.events]
            assert progress == sorted(progress), "progress never decreases"
            runs = [[]]  # events per run of the job: a replay starts a new one
            for e in w.events[1:]:
                if e["event"] == "queued":
                    runs.append([])
                runs[-1].append(e)
            for events in runs:
                ends = [e for e in events if e["status"] in TERMINAL]
                assert len(ends) <= 1, "one terminal event per run"
                assert not ends or ends[0] is events[-1], "nothing follows a terminal event"
            if status in (Status.COMPLETED, Status.CANCELLED):
                if self.frozen is None:
                    self.frozen = dict(w.job)
                assert w.job == self.frozen, "a finished job never changes"
            if status.terminal:
                return
            gen = w.job["gen"]
            live = w.job.get("owner", "") != "" and int(w.job.get("lease_until", "0")) > 0
            entries = [e for items in w.streams.values() for e in items if e[1] == gen]
            delayed = [m for m in w.delayed if m.split("|")[2] == gen]
            assert live or entries or delayed, "a job that is not finished has a way forward"
            assert len(entries) <= 1 and len(delayed) <= 1 and not (entries and delayed), (
                "and only one"
            )
            assert not (live and delayed), "a run holding the job is not also waiting to retry"

    return ProtocolMachine


@pytest.mark.timeout(60)
def test_lua_and_the_model_agree_and_the_invariants_hold(prefix: str) -> None:
    """However operations interleave, Redis does exactly what the protocol model says, and no
    job is ever stuck, doubly scheduled, changed after it ended, or moved backwards."""
    run_state_machine_as_test(
        make_machine(prefix),
        settings=settings(
            max_examples=60,  # 60 runs of up to 40 steps: about 2,000 operations
            stateful_step_count=40,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
