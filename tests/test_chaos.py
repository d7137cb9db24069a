"""Workers killed and stopped under load, as separate OS processes: every job still ends once."""

from __future__ import annotations

import asyncio
import io
import json
import random
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from tests.conftest import TERMINAL, watch, watch_until
from tests.faults import FAKE_FFMPEG, Faults, wait_exit
from tests.media import Clip
from tests.test_processes import ROOT, Role
from vidstream.job.model import Stage

pytestmark = pytest.mark.slow  # real Whisper and FFmpeg, end to end


class Cluster:
    """Role processes sharing one Redis prefix, data dir and fault switches."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.roles: list[Role] = []
        self.kills = 0
        self.gateway = f"http://127.0.0.1:{env['GATEWAY_PORT']}"

    async def start(self, role: str, **env: str) -> Role:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "vidstream", role, env={**self.env, **env}, cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        started = Role(role, proc)
        self.roles.append(started)
        await started.wait_for("vidstream_ready")
        return started

    async def kill(self, victim: Role) -> None:
        """SIGKILL a role's process and start another of the same role."""
        victim.proc.send_signal(signal.SIGKILL)
        await victim.proc.wait()
        self.kills += 1
        await self.start(victim.name, JOB_MAX_ATTEMPTS="5")

    async def report(self, http: aiohttp.ClientSession, job_ids: list[str]) -> str:
        """Where each job stands, and the end of each process's log: for a failed test."""
        lines = []
        for job_id in job_ids:
            async with http.get(f"{self.gateway}/v1/jobs/{job_id}/events") as r:
                events = (await r.json())["events"]
            lines.append(f"{job_id}: " + " ".join(f"{e['event']}:{e['stage']}" for e in events))
        for role in self.roles:
            lines.append(f"--- {role.name} pid {role.proc.pid} rc {role.proc.returncode}")
            lines.extend(line.strip()[:300] for line in role.lines[-15:])
        return "\n".join(lines)

    def holding(self, consumer: str) -> Role:
        """The live process whose worker is called `consumer`."""
        needle = f'"consumer": "{consumer}"'
        return next(
            r for r in self.roles if r.proc.returncode is None and any(needle in x for x in r.lines)
        )

    async def close(self) -> None:
        for role in self.roles:
            if role.proc.returncode is None:
                role.proc.kill()
                await role.proc.wait()


@pytest.fixture
async def cluster(role_env: dict[str, str], faults: Faults) -> AsyncIterator[Cluster]:
    env = {
        **role_env,
        **faults.env,
        "FFMPEG_BINARY": str(FAKE_FFMPEG),
        "VISIBILITY_TIMEOUT_S": "2",
        "RETRY_BASE_DELAY_S": "0.2",
    }
    running = Cluster(env)
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
def faults(tmp_path: Path) -> Faults:
    return Faults(tmp_path / "faults")


async def submit(http: aiohttp.ClientSession, cluster: Cluster, clip: Clip) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("burn_subtitles", "false")
    form.add_field("file", io.BytesIO(clip.path.read_bytes()), filename="clip.mp4")
    async with http.post(f"{cluster.gateway}/v1/jobs", data=form) as r:
        assert r.status == 202
        job: dict[str, Any] = await r.json()
        return job


async def drained(redis: Redis, prefix: str, timeout_s: float = 30.0) -> None:
    """Wait until no stage stream has a pending entry (duplicates are acked once the job ended,
    when a worker next reclaims them)."""
    async with asyncio.timeout(timeout_s):
        while True:
            pending = [
                (await redis.xpending(f"{prefix}:stream:{s.value}", f"{prefix}:{s.value}"))[
                    "pending"
                ]
                for s in Stage
            ]
            if pending == [0, 0]:
                return
            await asyncio.sleep(0.2)  # no event tells of an ack: look again shortly


async def chaos(
    cluster: Cluster, redis: Redis, prefix: str, jobs: list[dict[str, Any]], kills: int
) -> dict[str, list[str]]:
    """Follow every job; when a stage starts, now and then SIGKILL the worker holding it and
    start a replacement. Return each job's terminal events."""
    terminal: dict[str, list[str]] = {job["id"]: [] for job in jobs}
    rng = random.Random(7)
    async with connect(jobs[0]["links"]["ws"]) as ws:
        for job in jobs:
            subscribe = {"type": "subscribe", "job_id": job["id"], "token": job["ws_token"]}
            await ws.send(json.dumps({**subscribe, "last_event_id": "0-0"}))
        async for raw in ws:
            msg = json.loads(raw)
            if msg["type"] != "event":
                continue
            if msg["status"] in TERMINAL:
                terminal[msg["job_id"]].append(msg["event"])
                if all(terminal.values()):
                    return terminal
            if msg["event"] == "started" and cluster.kills < kills and rng.random() < 0.4:
                owner = await redis.hget(f"{prefix}:job:{{{msg['job_id']}}}", "owner")
                if owner:
                    await cluster.kill(cluster.holding(owner.split(":")[0]))
    raise AssertionError("the notifier closed the connection")


async def test_sigkill_under_load_loses_nothing(
    cluster: Cluster, faults: Faults, http: aiohttp.ClientSession, clip: Clip, redis: Redis,
    prefix: str, tmp_path: Path,
) -> None:  # fmt: skip
    """9 jobs, two workers per stage; workers holding a job are killed with SIGKILL and
    replaced. Every job completes once, with one video, and nothing stays pending."""
    faults.delay("render", 1.0)
    faults.delay("transcribe", 0.5)
    for role in ("gateway", "notifier", "transcribe", "transcribe", "render", "render"):
        await cluster.start(role, JOB_MAX_ATTEMPTS="5")
    jobs = [await submit(http, cluster, clip) for _ in range(9)]
    by_id = {job["id"]: job for job in jobs}
    try:
        async with asyncio.timeout(100):
            terminal_events = await chaos(cluster, redis, prefix, jobs, kills=5)
    except TimeoutError:
        raise AssertionError(await cluster.report(http, list(by_id))) from None
    assert cluster.kills >= 3
    assert terminal_events == {job_id: ["completed"] for job_id in by_id}
    for job_id in by_id:
        async with http.get(f"{cluster.gateway}/v1/jobs/{job_id}/events") as r:
            events = [e["event"] for e in (await r.json())["events"]]
        assert [e for e in events if e in TERMINAL] == ["completed"], (job_id, events)
        assert events[-1] == "completed"
    storage = tmp_path / "data" / "storage"
    videos = sorted(p.name.split("-")[0] for p in (storage / "rendered").iterdir())
    assert videos == sorted(by_id)  # each job's video exists exactly once
    for job_id in by_id:  # one transcript too: what killed runs stored went with them
        files = [p for p in (storage / "jobs" / job_id).rglob("*") if p.is_file()]
        assert sorted(p.name for p in files) == [
            "transcript.json", "transcript.srt", "transcript.vtt",
        ]  # fmt: skip
    await drained(redis, prefix)
    assert await redis.zcard(f"{prefix}:delayed") == 0


@pytest.mark.parametrize("stage", ["transcribe", "render"])
async def test_sigterm_hands_the_running_job_to_another_worker(
    cluster: Cluster, faults: Faults, http: aiohttp.ClientSession, clip: Clip, stage: str
) -> None:
    """SIGTERM past the grace period stops the subprocess, exits 0, and the job is taken up
    by the next worker at once, without counting as a failed try."""
    other = "render" if stage == "transcribe" else "transcribe"
    for role in ("gateway", "notifier", other):
        await cluster.start(role)
    worker = await cluster.start(stage, SHUTDOWN_GRACE_S="1")
    faults.delay(stage, 60)
    running = faults.announce(stage)
    job = await submit(http, cluster, clip)
    await running.pid()
    assert await worker.stop(timeout_s=20) == 0
    assert any('"job_interrupted"' in line for line in worker.lines)
    faults.clear(stage)
    await cluster.start(stage)
    events = await watch(job)
    assert events[-1]["event"] == "completed"
    starts = [e for e in events if e["event"] == "started" and e["stage"] == stage]
    assert [e["attempts"] for e in starts] == [1, 1]  # handed back: not a failed try


async def test_sigterm_lets_a_short_job_finish_and_a_second_signal_hurries(
    cluster: Cluster, faults: Faults, http: aiohttp.ClientSession, clip: Clip
) -> None:
    """Within the grace period a running job finishes before the worker exits; a second
    SIGTERM cuts a long grace period short."""
    for role in ("gateway", "notifier", "transcribe"):
        await cluster.start(role)
    worker = await cluster.start("render", SHUTDOWN_GRACE_S="60")
    faults.delay("render", 2)
    running = faults.announce("render")
    job = await submit(http, cluster, clip)
    await running.pid()
    assert await worker.stop(timeout_s=30) == 0
    assert (await watch(job))[-1]["event"] == "completed"  # finished by the stopping worker

    hurried = await cluster.start("render", SHUTDOWN_GRACE_S="60")
    faults.delay("render", 60)
    running = faults.announce("render")
    slow = await submit(http, cluster, clip)
    await running.pid()
    hurried.proc.send_signal(signal.SIGTERM)
    await hurried.wait_for('"draining"')
    assert await hurried.stop(timeout_s=10) == 0  # the second SIGTERM
    faults.clear("render")
    await cluster.start("render")
    assert (await watch(slow))[-1]["event"] == "completed"


async def test_a_killed_workers_job_moves_within_the_visibility_timeout(
    cluster: Cluster, faults: Faults, http: aiohttp.ClientSession, clip: Clip, redis: Redis,
    prefix: str,
) -> None:  # fmt: skip
    """SIGKILL to the worker rendering a job: its FFmpeg dies with it, the other worker starts
    the job within VISIBILITY_TIMEOUT_S of the kill, and it completes."""
    timeout = {"VISIBILITY_TIMEOUT_S": "6"}
    for role in ("gateway", "notifier", "transcribe"):
        await cluster.start(role, **timeout)
    first = await cluster.start("render", **timeout)
    faults.delay("render", 60)
    rendering = faults.announce("render")
    job = await submit(http, cluster, clip)
    ffmpeg = await rendering.pid()
    second = await cluster.start("render", **timeout)  # idle until the first one dies
    owner = await redis.hget(f"{prefix}:job:{{{job['id']}}}", "owner")
    assert owner is not None
    assert cluster.holding(owner.split(":")[0]) is first
    faults.clear("render")
    history = await watch_until(job, lambda e: e["event"] == "started" and e["stage"] == "render")
    first.proc.send_signal(signal.SIGKILL)
    await first.proc.wait()
    await wait_exit(ffmpeg, timeout_s=3.0)  # it would have slept 60 s, then written its output
    async with asyncio.timeout(6.0):
        restarted = await watch_until(
            job,
            lambda e: e["event"] == "started" and e["stage"] == "render",
            since=history[-1]["id"],
        )
    assert restarted[-1]["event"] == "started"
    await second.wait_for('"entry_reclaimed"', timeout_s=1)  # the second worker took it
    assert (await watch(job))[-1]["event"] == "completed"
