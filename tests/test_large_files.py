"""A large video moves through storage and the gateway without ever sitting in memory."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.conftest import free_port
from tests.test_processes import ROOT, Role
from vidstream.core.settings import Settings

pytestmark = [pytest.mark.parametrize("backend", ["local", "s3"], indirect=True), pytest.mark.slow]

MiB = 1024 * 1024
SIZE_MB = 300
LIMIT_KB = 100 * 1024


def env_for(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process read the same settings."""
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "REDIS_PREFIX": settings.redis_prefix,
        "VIDSTREAM_DATA_DIR": str(settings.data_dir),
        "SECRET_KEY": settings.secret_key,
        "VIDSTREAM_STORAGE": settings.storage,
        "LOG_FORMAT": "json",
        "VIDSTREAM_AUTH": settings.auth,
    }
    if settings.storage == "s3":
        env |= {
            "S3_ENDPOINT_URL": settings.s3_endpoint_url,
            "S3_BUCKET": settings.s3_bucket,
            "S3_REGION": settings.s3_region,
            "AWS_ACCESS_KEY_ID": settings.s3_access_key_id,
            "AWS_SECRET_ACCESS_KEY": settings.s3_secret_access_key,
        }
    return env


async def test_store_moves_300_mb_with_flat_memory(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Upload, download and a streamed upload of 300 MB raise peak RSS by under 100 MB."""
    env = env_for(make_settings())
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.bigfile", str(SIZE_MB), str(tmp_path), env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(240):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    report: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    assert report["sizes"] == [SIZE_MB * MiB] * 3
    growth = report["peak_kb"] - report["start_kb"]
    assert growth < LIMIT_KB, f"peak RSS grew by {growth / 1024:.0f} MB"


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.fixture
async def gateway(
    make_settings: Callable[..., Settings], redis: Redis
) -> AsyncIterator[tuple[str, int]]:
    port = free_port()
    env = env_for(make_settings()) | {"GATEWAY_PORT": str(port)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vidstream", "gateway", env=env, cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    role = Role("gateway", proc)
    try:
        await role.wait_for("vidstream_ready")
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        assert await role.stop() == 0


async def test_gateway_streams_a_300_mb_upload(
    gateway: tuple[str, int], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A 300 MB multipart POST /v1/jobs is streamed to storage: the gateway's peak RSS grows
    by under 100 MB, and the job is queued with the whole file as its source."""
    url, pid = gateway
    source = tmp_path / "big.mp4"
    with source.open("wb") as f:
        f.truncate(SIZE_MB * MiB)
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    start = peak_rss_kb(pid)
    with source.open("rb") as f:
        form = aiohttp.FormData()
        form.add_field("file", f, filename="big.mp4", content_type="video/mp4")
        async with http.post(f"{url}/v1/jobs", data=form, timeout=aiohttp.ClientTimeout(240)) as r:
            job = await r.json()
            assert r.status == 202, job
    growth = peak_rss_kb(pid) - start
    assert growth < LIMIT_KB, f"the gateway's peak RSS grew by {growth / 1024:.0f} MB"
    assert job["status"] == "queued"
    async with http.get(job["links"]["self"]) as r:
        assert (await r.json())["source"]["name"] == "big.mp4"
