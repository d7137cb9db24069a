"""What operators and scripts see: Prometheus metrics that move with jobs, a request id that
follows a job through every role's logs, and CLI commands whose --json output parses."""

from __future__ import annotations

import io
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from tests.conftest import cli, free_port, upload_job, watch
from tests.media import Clip
from vidstream.core.settings import Settings
from vidstream.job.model import Job, Options
from vidstream.runtime import Stack

pytestmark = pytest.mark.slow  # real Whisper


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition, by name and labels; parsing fails loudly."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:  # fmt: skip
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
async def stack(make_settings: Callable[..., Settings], redis: Redis) -> AsyncIterator[Stack]:
    async with Stack(make_settings()) as running:
        yield running


async def test_metrics_move_with_a_job(
    stack: Stack, http: aiohttp.ClientSession, clip: Clip
) -> None:
    """/metrics parses as Prometheus text; a transcribe job moves the created, finished, stage
    duration, Whisper speed, HTTP and WebSocket numbers; queue gauges are there per stage."""
    assert stack.gateway is not None and stack.notifier is not None
    gateway = stack.gateway.url

    async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        async with http.get(f"{gateway}/metrics") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            return samples(await r.text())

    before = await scrape()
    job = await upload_job(http, gateway, clip.path, kind="transcribe")
    assert (await watch(job))[-1]["event"] == "completed"
    after = await scrape()

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("vidstream_jobs_created_total", kind="transcribe") == 1
    assert moved("vidstream_jobs_finished_total", kind="transcribe", status="completed") == 1
    assert moved("vidstream_stage_duration_seconds_count", stage="transcribe",
                 outcome="completed") == 1  # fmt: skip
    assert moved("vidstream_whisper_realtime_factor_count") == 1
    assert moved("vidstream_http_requests_total", route="/v1/jobs", method="POST",
                 status="202") == 1  # fmt: skip
    assert moved("vidstream_ws_messages_sent_total") >= 3  # snapshot, started, ... completed
    for stage in ("transcribe", "render"):
        for priority in ("high", "normal", "low"):  # a gauge per stream
            labels = (("priority", priority), ("stage", stage))
            assert ("vidstream_queue_length", labels) in after
            assert ("vidstream_queue_lag", labels) in after
    # The notifier answers /metrics on its own port too.
    notifier_http = stack.notifier.url.replace("ws://", "http://").removesuffix("/v1/ws")
    async with http.get(f"{notifier_http}/metrics") as r:
        assert r.status == 200
        assert "vidstream_ws_connections" in await r.text()


async def test_a_worker_only_process_serves_metrics_on_its_port(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession
) -> None:
    """A render worker on its own (no gateway) answers /metrics on METRICS_PORT, with the queue
    gauges read from Redis: a subtitle job waiting for transcription shows in its numbers."""
    port = free_port()
    async with Stack(make_settings(metrics_port=port), ("render",)) as running:
        assert running.gateway is None and running.services is not None
        await running.services.jobs.create(Job.new("uploads/waiting/source", Options()))
        async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            found = samples(await r.text())
    assert value(found, "vidstream_queue_length", stage="transcribe", priority="normal") == 1
    assert value(found, "vidstream_queue_length", stage="transcribe", priority="high") == 0
    assert ("vidstream_queue_lag", (("priority", "normal"), ("stage", "render"))) in found


async def test_a_request_id_follows_the_job(
    stack: Stack, http: aiohttp.ClientSession, clip: Clip, capfd: pytest.CaptureFixture[str]
) -> None:
    """The client's X-Request-Id comes back, is stored on the job, and is on the gateway's and
    the worker's log lines for that job; without one, the gateway makes one."""
    assert stack.gateway is not None
    async with http.get(f"{stack.gateway.url}/healthz") as r:
        made = r.headers["X-Request-Id"]
        assert len(made) >= 16
    form = aiohttp.FormData()
    form.add_field("kind", "transcribe")
    form.add_field("file", io.BytesIO(clip.path.read_bytes()), filename="clip.mp4")
    headers = {"X-Request-Id": "req-abc.123"}
    async with http.post(f"{stack.gateway.url}/v1/jobs", data=form, headers=headers) as r:
        assert r.status == 202 and r.headers["X-Request-Id"] == "req-abc.123"
        job = await r.json()
    assert job["request_id"] == "req-abc.123"
    assert (await watch(job))[-1]["event"] == "completed"
    logged = capfd.readouterr().err
    # One grep for the request id finds the gateway's line for the request that made the job,
    # and each worker's lines for it.
    found = [line for line in logged.splitlines() if "req-abc.123" in line]
    assert any("http_request" in line and job["id"] in line for line in found), logged[-3000:]
    assert any("run_started" in line and job["id"] in line for line in found), logged[-3000:]
    for bad in ("x" * 300, "two words", "<script>"):
        async with http.get(f"{stack.gateway.url}/healthz", headers={"X-Request-Id": bad}) as r:
            assert r.headers["X-Request-Id"] != bad  # not an id: a fresh one instead


async def test_cli_submits_two_files_and_prints_json(
    make_settings: Callable[..., Settings], role_env: dict[str, str], clip: Clip, tmp_path: Path
) -> None:
    """`submit --wait` with two files ends both; `jobs`, `status` and `dlq list` print JSON
    that parses with --json."""
    second = tmp_path / "again.mp4"
    second.write_bytes(clip.path.read_bytes())
    async with Stack(make_settings()) as stack:
        assert stack.gateway is not None
        env = {**role_env, "GATEWAY_PORT": str(stack.gateway.port)}
        code, out = await cli(env, "submit", str(clip.path), str(second), "--kind", "transcribe",
                              "--wait", "--gateway", stack.gateway.url)  # fmt: skip
        assert code == 0, out
        assert out.count(": completed") == 2 and out.count("transcript.srt  (") == 2
        code, out = await cli(env, "jobs", "--json", "--gateway", stack.gateway.url)
        assert code == 0, out
        listed = json.loads(out)["jobs"]
        assert [j["status"] for j in listed] == ["completed", "completed"]
        assert {j["source"]["name"] for j in listed} == {"again.mp4", os.path.basename(clip.path)}
        code, out = await cli(env, "status", "--json")
        assert code == 0, out
        streams = {s["stage"]: s for s in json.loads(out)["streams"]}
        assert streams["transcribe"]["consumers"] and streams["transcribe"]["pending"] == 0
        code, out = await cli(env, "status", listed[0]["id"], "--json")
        assert json.loads(out)["events"][-1]["event"] == "completed"
        code, out = await cli(env, "dlq", "list", "--json")
        assert code == 0 and json.loads(out) == {"dead_letters": []}
        code, out = await cli(env, "jobs", "--gateway", stack.gateway.url)
        assert code == 0 and listed[0]["id"] in out  # the plain table, without a terminal
