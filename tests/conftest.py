"""Fixtures: real Redis (own database, own key prefix), real servers on port 0, real media."""

from __future__ import annotations

import asyncio
import gc
import importlib
import io
import json
import logging
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, settings
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from tests.faults import Faults
from tests.media import Clip, make_clip
from vidstream.core import logs
from vidstream.core.settings import Settings
from vidstream.ops.joblogs import capture
from vidstream.runtime import Stack

# A role's modules are imported when its first process starts (so each role loads only its own):
# inside the event loop, which the blocked-loop check below counts against whichever test
# starts a role first in a test process. Imported here, before any loop runs.
importlib.import_module("vidstream.http.app")
importlib.import_module("vidstream.notifier.server")
importlib.import_module("vidstream.webhooks.deliver")
importlib.import_module("vidstream.actors.transcribe")
importlib.import_module("vidstream.actors.render")
importlib.import_module("vidstream.kinds").load_all()  # each kind's code (the roles load it)

# A callback holding the loop longer fails its test. With parallel workers (pytest-xdist) two
# test processes and their FFmpeg and Whisper children share the cores, and a start-up callback
# that takes 0.3 s alone (botocore reading its models) was seen at 0.54 s: the bound doubles.
SLOW_CALLBACK_S = 1.0 if os.environ.get("PYTEST_XDIST_WORKER") else 0.5
REDIS_URL = os.environ.get("VIDSTREAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
TERMINAL = ("completed", "failed", "cancelled")

logs.configure("info", "console", extra=(capture,))

# `make test` (CI) runs each property with the settings written beside it, and the protocol's
# model check on the same sequences every run. `make test-thorough` loads this profile: new
# random sequences on every run, many more of them (tests/test_protocol_model.py).
settings.register_profile(
    "thorough", max_examples=1000, derandomize=False, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip


# -- Redis -------------------------------------------------------------------------------------


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own; only its keys are removed afterwards."""
    return f"vstest-{secrets.token_hex(4)}"


@pytest.fixture
async def redis(prefix: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await client.ping()
    except Exception as exc:
        pytest.fail(f"the tests need Redis at {REDIS_URL} ({exc}); `make test` starts one")
    yield client
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


# -- settings and the stack --------------------------------------------------------------------


@pytest.fixture(params=["local"])
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend; parametrize with `indirect=True` to run a test on both."""
    return str(request.param)


@pytest.fixture
def make_settings(
    tmp_path: Path, prefix: str, backend: str, request: pytest.FixtureRequest
) -> Callable[..., Settings]:
    storage: dict[str, Any] = {}
    if backend == "s3":
        storage = {"storage": "s3", **request.getfixturevalue("s3_settings")}

    def make(**changes: Any) -> Settings:
        base = Settings(
            redis_url=REDIS_URL,
            redis_prefix=prefix,
            data_dir=tmp_path / "data",
            secret_key="test-secret",
            gateway_port=0,
            notifier_port=0,
            shutdown_grace_s=5.0,
            log_format="console",
            auth="off",  # tests of keys and tenants turn it on
            rate_limit_per_min=0,
            **storage,
        )
        return base.replace(**changes)

    return make


# -- S3: moto's standalone server, real HTTP -----------------------------------------------------


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server in its own process on a free port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    ready, url = threading.Event(), []

    def drain() -> None:  # reads moto's request log to the end, so its pipe never fills
        assert proc.stderr is not None
        for line in proc.stderr:
            if not ready.is_set() and (m := re.search(r"Running on (http://[\d.:]+)", line)):
                url.append(m.group(1))
                ready.set()

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    if not ready.wait(30):
        proc.kill()
        pytest.fail("moto server did not start")
    yield url[0]
    proc.terminate()
    proc.wait(10)
    drainer.join(10)
    assert proc.stderr is not None
    proc.stderr.close()


@pytest.fixture
def s3_settings(moto_endpoint: str) -> Iterator[dict[str, Any]]:
    """Settings for a bucket of this test's own on the moto server."""
    import boto3

    bucket = f"vidstream-{secrets.token_hex(6)}"
    client = boto3.client(
        "s3", endpoint_url=moto_endpoint, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
    )  # fmt: skip
    client.create_bucket(Bucket=bucket)
    yield {
        "s3_endpoint_url": moto_endpoint,
        "s3_bucket": bucket,
        "s3_region": "us-east-1",
        "s3_access_key_id": "test",
        "s3_secret_access_key": "test",
    }
    # Free moto's memory: it keeps objects in RAM.
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def stack(settings: Settings, redis: Redis) -> AsyncIterator[Stack]:
    """All four roles in this process, as `vidstream dev` runs them."""
    async with Stack(settings) as running:
        yield running


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def role_env(tmp_path: Path, prefix: str, redis: Redis) -> dict[str, str]:
    """The environment of role processes sharing this test's Redis prefix and data dir."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "REDIS_URL": REDIS_URL,
        "REDIS_PREFIX": prefix,
        "VIDSTREAM_DATA_DIR": str(tmp_path / "data"),
        "SECRET_KEY": "test-secret",
        "GATEWAY_PORT": str(free_port()),
        "VIDSTREAM_AUTH": "off",
        "NOTIFIER_PORT": str(free_port()),
        "LOG_FORMAT": "json",
    }


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


# -- media ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def clip(media_dir: Path) -> Clip:
    """About 10 s of test pattern with three known sentences spoken over it (MP4)."""
    return make_clip(media_dir)


@pytest.fixture(scope="session")
def text_file(media_dir: Path) -> Path:
    path = media_dir / "notes.mp4"
    path.write_text("This is a text file pretending to be a video.\n" * 20)
    return path


# -- helpers -------------------------------------------------------------------------------------


async def upload_job(
    http: aiohttp.ClientSession, gateway: str, path: Path, **fields: str
) -> dict[str, Any]:
    """POST /v1/jobs as multipart with `path` as the file; return the 202 body."""
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    form.add_field(
        "file", io.BytesIO(path.read_bytes()), filename=path.name, content_type="video/mp4"
    )
    async with http.post(f"{gateway}/v1/jobs", data=form) as r:
        body: dict[str, Any] = await r.json()
        assert r.status == 202, body
    return body


async def watch(
    job: dict[str, Any], timeout_s: float = 90.0, since: str = "0-0"
) -> list[dict[str, Any]]:
    """Subscribe to the job over the WebSocket and collect its events until the terminal one."""
    return await watch_until(job, lambda _: False, timeout_s, since)


async def watch_until(
    job: dict[str, Any], done: Callable[[dict[str, Any]], bool], timeout_s: float = 90.0,
    since: str = "0-0",
) -> list[dict[str, Any]]:  # fmt: skip
    """The job's events up to the first one for which `done` is true, or the job's end (a
    terminal event no older than the snapshot: a retried job's history holds earlier ends)."""
    events: list[dict[str, Any]] = []
    newest = (0, 0)

    def stream_id(text: str) -> tuple[int, int]:
        ms, seq = text.split("-")
        return int(ms), int(seq)

    async with asyncio.timeout(timeout_s), connect(job["links"]["ws"]) as ws:
        await ws.send(json.dumps({"type": "subscribe", "job_id": job["id"],
                                  "token": job["ws_token"], "last_event_id": since}))  # fmt: skip
        async for raw in ws:
            msg = json.loads(raw)
            assert msg["type"] not in ("error", "reset"), msg
            if msg["type"] == "snapshot":
                newest = stream_id(msg["last_event_id"] or "0-0")
            elif msg["type"] == "event":
                events.append(msg)
                ended = msg["status"] in TERMINAL and stream_id(msg["id"]) >= newest
                if done(msg) or ended:
                    return events
    raise AssertionError(f"the connection closed first: {events}")


async def cli(env: dict[str, str], *args: str, timeout_s: float = 120) -> tuple[int, str]:
    """Run `vidstream ARGS` as a user would; its exit status and output (with the end of
    what it wrote to stderr when it failed)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vidstream", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(timeout_s):
        out, err = await proc.communicate()
    return proc.returncode or 0, out.decode() + err.decode()[-2000:] * (proc.returncode != 0)


@pytest.fixture
def faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Faults:
    """Switches that make the fake FFmpeg and Whisper fail or slow down, for this test's roles."""
    switches = Faults(tmp_path / "faults")
    for name, value in switches.env.items():
        monkeypatch.setenv(name, value)
    return switches


async def fetch(http: aiohttp.ClientSession, url: str) -> bytes:
    async with http.get(url) as r:
        assert r.status == 200, await r.text()
        return await r.read()


# -- the event loop must never block -------------------------------------------------------------


class _Collections:
    """When the garbage collector ran, so a pause of its own is not taken for a blocking call:
    late in a long run (coverage on, a large heap) one full collection takes 0.2-0.5 s."""

    def __init__(self) -> None:
        self.spans: deque[tuple[float, float]] = deque(maxlen=64)
        self._began = 0.0
        gc.callbacks.append(self._observe)

    def _observe(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.monotonic()
        else:
            self.spans.append((self._began, time.monotonic()))

    def within(self, seconds: float) -> float:
        """Seconds spent collecting in the last `seconds`."""
        since = time.monotonic() - seconds
        return sum(end - max(begin, since) for begin, end in self.spans if end > since)


_COLLECTIONS = _Collections()
_TOOK = re.compile(r"took (\d+(?:\.\d+)?) seconds")


class _SlowCallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        took = _TOOK.search(message)
        if "Executing" not in message or took is None:
            return
        seconds = float(took.group(1))
        # Logged as the callback ends: what it spent in the collector is not its own.
        if seconds - _COLLECTIONS.within(seconds + 0.05) > SLOW_CALLBACK_S:
            self.records.append(message)


@pytest.fixture(autouse=True)
def no_blocking_calls(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test during which any callback held the event loop for more than 0.5 s."""
    handler = _SlowCallbacks()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    yield
    logger.removeHandler(handler)
    if handler.records:
        pytest.fail("the event loop was blocked:\n" + "\n".join(handler.records[:5]))


@pytest.fixture(autouse=True)
async def _debug_loop() -> None:
    """Run every test's loop in debug mode, which reports callbacks that take over 0.5 s."""
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_CALLBACK_S
