"""Roles on separate hosts that share only Redis and an S3 bucket: network namespaces the test
makes (tests/netns.py), each role a process on its own host, Redis and the S3 server on another.

A worker host whose link is cut mid-job is presumed dead: the job is finished by another host,
once, with one video; when the link comes back the cut host's run finds it lost the job and
leaves no file behind, and the host takes new work without a restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.conftest import TERMINAL
from tests.faults import FAKE_FFMPEG, Faults
from tests.netns import Host, Network, Unavailable
from tests.test_processes import ROOT, Role
from vidstream.media.ffmpeg import resolve_binary
from vidstream.state.keys import Keys

pytestmark = pytest.mark.slow  # six processes on five hosts

BUCKET = "vidstream"
REDIS_PORT, S3_PORT, GATEWAY_PORT = 6379, 9000, 8080
PREFIX = "vs"
CLIP = {"type": "color", "color": "#336699", "start": 0, "duration": 1}
COMPOSE = {"kind": "compose", "timeline": {"output": {"width": 160, "height": 120},
                                           "tracks": [{"clips": [CLIP]}]}}  # fmt: skip


@pytest.fixture
def network() -> Iterator[Network]:
    try:
        net = Network()
    except Unavailable as exc:
        pytest.skip(str(exc))
    try:
        yield net
    finally:
        net.close()


class Site:
    """The hosts of one deployment and the processes running on them (all killed at the end)."""

    def __init__(self, network: Network, workdir: Path) -> None:
        self.network, self.workdir = network, workdir
        self.services = network.add("services")  # Redis and S3, as a managed service would be
        self.gateway = network.add("gateway")
        self.worker_a = network.add("worker-a")
        self.worker_b = network.add("worker-b")
        self.client = network.add("client")  # where the user's calls come from
        self.procs: list[Role] = []
        self.marks: list[str] = []  # when links were cut and mended (Unix time)
        self.sock = Path(tempfile.mkdtemp(prefix="vs-")) / "redis.sock"  # short: a socket path
        self.env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "REDIS_URL": f"redis://{self.services.address}:{REDIS_PORT}/0",
            "REDIS_PREFIX": PREFIX,
            "REDIS_TIMEOUT_S": "1",
            "SECRET_KEY": "test-secret",
            "VIDSTREAM_AUTH": "off",
            "LOG_FORMAT": "json",
            "VIDSTREAM_STORAGE": "s3",
            "S3_ENDPOINT_URL": f"http://{self.services.address}:{S3_PORT}",
            "S3_BUCKET": BUCKET,
            "S3_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "S3_TIMEOUT_S": "2",
            "VISIBILITY_TIMEOUT_S": "2",
            "SHUTDOWN_GRACE_S": "5",
            "GATEWAY_HOST": self.gateway.address,
            "GATEWAY_PORT": str(GATEWAY_PORT),
            "FFMPEG_BINARY": str(FAKE_FFMPEG),
            "VS_REAL_FFMPEG": resolve_binary("auto"),
        }
        self.api = f"http://{self.gateway.address}:{GATEWAY_PORT}"

    def faults(self, host: Host) -> Faults:
        return Faults(self.workdir / host.name / "faults")

    async def run(self, host: Host, name: str, *argv: str, **env: str) -> Role:
        """Start `argv` on `host`; its stderr (where vidstream logs) is read line by line."""
        data = self.workdir / host.name / "data"
        host_env = {**self.env, "VIDSTREAM_DATA_DIR": str(data),
                    "VS_FAKE_DIR": str(self.faults(host).dir), **env}  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *host.command(*argv), env=host_env, cwd=ROOT, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        role = Role(f"{name}@{host.name}", proc)
        self.procs.append(role)
        return role

    async def role(self, host: Host, role: str, **env: str) -> Role:
        started = await self.run(host, role, sys.executable, "-m", "vidstream", role, **env)
        await started.wait_for("vidstream_ready", timeout_s=60)
        return started

    async def start_services(self) -> Redis:
        """Redis and moto's S3 server on the services host, with the bucket; a Redis client
        for the test's own checks (through a Unix socket: the test is on no host)."""
        redis = await self.run(
            self.services, "redis", "sh", "-c", 'exec "$@" >&2', "redis-server",
            shutil.which("redis-server") or "redis-server",
            "--bind", self.services.address, "--port", str(REDIS_PORT), "--protected-mode", "no",
            "--unixsocket", str(self.sock), "--unixsocketperm", "700",
            "--save", "", "--appendonly", "no", "--logfile", "",
        )  # fmt: skip
        s3 = await self.run(
            self.services, "s3", sys.executable, "-m", "moto.server",
            "-H", self.services.address, "-p", str(S3_PORT),
        )  # fmt: skip
        await redis.wait_for("Ready to accept connections", timeout_s=20)
        await s3.wait_for("Running on", timeout_s=30)
        await self.client.call(lambda: self.s3().create_bucket(Bucket=BUCKET))
        return Redis(unix_socket_path=str(self.sock), decode_responses=True)

    def s3(self) -> Any:
        """A boto3 client of the bucket's server (call from a host: `Host.call`)."""
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.env["S3_ENDPOINT_URL"], region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test",
        )  # fmt: skip

    async def objects(self) -> list[str]:
        """Every object in the bucket, as the client host lists it."""

        def listing() -> list[str]:
            found = self.s3().list_objects_v2(Bucket=BUCKET).get("Contents", [])
            return sorted(obj["Key"] for obj in found)

        return await self.client.call(listing)

    async def api_call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A request to the gateway from the client host; its status and JSON answer."""

        def send() -> tuple[int, Any]:
            data = json.dumps(body).encode() if body is not None else None
            request = urllib.request.Request(
                self.api + path, data=data, method=method,
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, json.loads(r.read())

        return await self.client.call(send)

    def cut(self, host: Host) -> None:
        self.network.cut(host)
        self.marks.append(f"{time.time():.3f} {host.name} cut off")

    def mend(self, host: Host) -> None:
        self.network.mend(host)
        self.marks.append(f"{time.time():.3f} {host.name} back")

    def report(self) -> str:
        """What happened, for a failed test: the cuts, and each process's log (moto's requests
        for objects only)."""
        lines = [*self.marks]
        for proc in self.procs:
            lines.append(f"--- {proc.name}: exit status {proc.proc.returncode}")
            s3 = proc.name.startswith("s3@")  # moto logs every request: the objects' only
            lines.extend(x.rstrip()[:400] for x in proc.lines if not s3 or "/vidstream/" in x)
        return "\n".join(lines)

    async def close(self) -> None:
        print(self.report())  # pytest shows it when the test failed
        for proc in self.procs:
            if proc.proc.returncode is None:
                proc.proc.kill()
                await proc.proc.wait()
        shutil.rmtree(self.sock.parent, ignore_errors=True)


@pytest.fixture
async def site(network: Network, tmp_path: Path) -> AsyncIterator[Site]:
    running = Site(network, tmp_path)
    try:
        yield running
    finally:
        await running.close()


async def ended(redis: Redis, job_id: str, timeout_s: float = 60) -> list[dict[str, str]]:
    """The job's events up to its terminal one, read from Redis as they are written."""
    stream, last, events = Keys(PREFIX).job_events(job_id), "0-0", []
    async with asyncio.timeout(timeout_s):
        while True:
            for _, entries in await redis.xread({stream: last}, block=1000) or []:
                for entry_id, fields in entries:
                    last = entry_id
                    events.append(fields)
                    if fields["status"] in TERMINAL:
                        return events


def mine(role: Role, event: str, job_id: str) -> bool:
    """Whether `role` logged `event` about `job_id`."""
    return any(f'"{event}"' in line and job_id in line for line in role.lines)


async def test_a_host_cut_off_mid_job_loses_it_to_another_and_writes_nothing_twice(
    site: Site,
) -> None:
    """Roles on three hosts sharing Redis and a bucket on a fourth: a worker host cut off
    mid-job is taken over by another host, the job completes once with one video, and once its
    link is back the cut host's run gives up without leaving a file, then the host takes the
    next job itself."""
    redis = await site.start_services()
    try:
        # Worker-a's FFmpeg says when it starts, then waits 3 s: the link is cut mid-render,
        # and the render ends while the host is cut off, so its run then tries to store it.
        faults = site.faults(site.worker_a)
        faults.delay("render", 3)
        rendering = faults.announce("render")
        gateway, worker_a = await asyncio.gather(
            site.role(site.gateway, "gateway"), site.role(site.worker_a, "render")
        )
        status, job = await site.api_call("POST", "/v1/jobs", COMPOSE)
        assert status == 202, job
        await rendering.pid()
        site.cut(site.worker_a)
        # A worker started with local storage beside them refuses, saying what to set.
        local = await site.run(site.worker_b, "render", sys.executable, "-m", "vidstream",
                               "render", VIDSTREAM_STORAGE="local")  # fmt: skip
        worker_b = await site.role(site.worker_b, "render")
        async with asyncio.timeout(30):
            assert await local.proc.wait() == 2, "".join(local.lines[-20:])
        await local.stop()  # its last lines read
        refused = "".join(local.lines)
        assert "configuration error" in refused and "VIDSTREAM_STORAGE=s3" in refused, refused
        assert f"S3_BUCKET={BUCKET}" in refused, refused
        events = await ended(redis, job["id"])
        assert events[-1]["status"] == "completed", events
        assert mine(worker_b, "run_started", job["id"])
        # Cut off long enough for its calls to time out, not just to wait for retransmission.
        await worker_a.wait_for('"periodic_step_failed"', timeout_s=30)
        site.mend(site.worker_a)
        await worker_a.wait_for('"run_lost"', timeout_s=30)
        status, done = await site.api_call("GET", f"/v1/jobs/{job['id']}")
        assert status == 200 and done["status"] == "completed", done
        status, history = await site.api_call("GET", f"/v1/jobs/{job['id']}/events")
        assert [e["status"] for e in history["events"] if e["status"] in TERMINAL] == ["completed"]
        # One video, the one the job names, and no file of the cut host's run left anywhere.
        stored = await site.objects()
        assert [key for key in stored if key.endswith(".mp4")] == [done["outputs"]["video"]["key"]]
        assert stored == sorted(out["key"] for out in done["outputs"].values()), stored

        # Back on the network, the cut host recovers by itself and takes the next job.
        assert await worker_b.stop() == 0
        site.faults(site.worker_a).clear("render")
        status, second = await site.api_call("POST", "/v1/jobs", COMPOSE)
        assert status == 202, second
        events = await ended(redis, second["id"])
        assert events[-1]["status"] == "completed", events
        assert mine(worker_a, "run_started", second["id"])
        assert worker_a.proc.returncode is None and gateway.proc.returncode is None
    finally:
        await redis.aclose()
