"""The roles as separate OS processes, started from the Procfile as honcho would."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError

from tests.conftest import free_port
from tests.media import Clip, parse_cues, words_of

pytestmark = pytest.mark.slow  # real Whisper and FFmpeg, end to end

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


class Role:
    """One role's process; its log lines are read as they come, to wait for a given event."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name, self.proc = name, proc
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            async with self._changed:
                self.lines.append(line.decode(errors="replace"))
                self._changed.notify_all()

    async def wait_for(self, needle: str, timeout_s: float = 60) -> None:
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(
                lambda: (
                    any(needle in line for line in self.lines) or self.proc.returncode is not None
                )
            )
        assert any(needle in line for line in self.lines), "".join(self.lines[-20:])

    async def stop(self, timeout_s: float = 30) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout_s):
            code = await self.proc.wait()
            await self._reader
        return code


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = command.strip()
    return entries


@pytest.fixture
def env(role_env: dict[str, str]) -> dict[str, str]:
    return {**role_env, "SHUTDOWN_GRACE_S": "10"}


@pytest.fixture
async def roles(env: dict[str, str]) -> AsyncIterator[dict[str, Role]]:
    started: dict[str, Role] = {}
    try:
        for name, command in procfile().items():
            proc = await asyncio.create_subprocess_exec(
                *shlex.split(command), env=env, cwd=ROOT, stderr=asyncio.subprocess.PIPE
            )
            started[name] = Role(name, proc)
        for role in started.values():
            await role.wait_for("vidstream_ready")
        yield started
    finally:
        for role in started.values():
            if role.proc.returncode is None:
                role.proc.kill()
                await role.proc.wait()


async def run_cli(env: dict[str, str], *args: str, timeout_s: float = 120) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        BIN / "vidstream", *args, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(timeout_s):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_procfile_roles_run_a_job_and_stop_cleanly(
    roles: dict[str, Role], env: dict[str, str], clip: Clip, tmp_path: Path
) -> None:
    """`vidstream submit --wait` against four role processes completes; SIGTERM exits 0."""
    assert set(roles) == {"gateway", "notifier", "transcribe", "render"}
    gateway = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
    code, out = await run_cli(env, "submit", str(clip.path), "--gateway", gateway, "--wait")
    assert code == 0, out
    assert "completed" in out and "rendered/" in out and "transcript.srt" in out

    srt = next((Path(env["VIDSTREAM_DATA_DIR"]) / "storage" / "jobs").rglob("transcript.srt"))
    heard = {w for _, _, text in parse_cues(srt.read_text()) for w in words_of(text)}
    assert sum(w in heard for w in clip.words) / len(clip.words) >= 0.75

    code, out = await run_cli(env, "status")
    assert code == 0, out
    assert "transcribe" in out and "-transcribe-" in out and "-render-" in out

    for name, role in roles.items():
        assert await role.stop() == 0, (name, "".join(role.lines[-10:]))
        assert any('"stopped"' in line for line in role.lines), name


async def test_submit_reports_a_failed_job(
    roles: dict[str, Role], env: dict[str, str], tmp_path: Path
) -> None:
    """`vidstream submit --wait` exits 1 and prints the reason when the job fails."""
    bogus = tmp_path / "notes.mov"
    bogus.write_text("not a video at all\n" * 10)
    gateway = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
    code, out = await run_cli(env, "submit", str(bogus), "--gateway", gateway, "--wait")
    assert code == 1, out
    assert "failed" in out and "invalid_media" in out


async def test_dev_starts_a_private_redis_and_stops_it(tmp_path: Path) -> None:
    """With nothing at REDIS_URL, `vidstream dev` runs its own Redis (AOF on) and stops it."""
    redis_port = free_port()
    data = tmp_path / "data"
    env = {
        **os.environ,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "VIDSTREAM_DATA_DIR": str(data),
        "GATEWAY_PORT": str(free_port()),
        "NOTIFIER_PORT": str(free_port()),
        "LOG_FORMAT": "json",
    }
    proc = await asyncio.create_subprocess_exec(
        BIN / "vidstream", "dev", env=env, stderr=asyncio.subprocess.PIPE
    )
    dev = Role("dev", proc)
    try:
        await dev.wait_for("vidstream_ready")
        assert any("private_redis_started" in line for line in dev.lines)
        client = Redis.from_url(env["REDIS_URL"], decode_responses=True)
        assert await client.ping()
        assert (await client.config_get("appendonly")) == {"appendonly": "yes"}
        await client.aclose()
        assert (data / "redis").is_dir()
        assert await dev.stop() == 0
        client = Redis.from_url(env["REDIS_URL"], socket_connect_timeout=1)
        with pytest.raises(ConnectionError):
            await client.ping()
        await client.aclose()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_the_cli_knows_every_role() -> None:
    """The CLI runs every role the runtime does, and pauses each that takes work: both read
    the one declaration (`job.stages`), without importing the roles."""
    from vidstream import runtime
    from vidstream.cli.main import _parser
    from vidstream.job.stages import PAUSABLE, ROLES, Stage

    assert tuple(role.name for role in ROLES) == runtime.ROLES
    assert {role.stage for role in ROLES} - {None} == set(Stage)  # a role runs each stage
    for role in runtime.ROLES:
        assert _parser().parse_args([role]).command == role
    assert ("gateway", *(stage.value for stage in Stage)) == PAUSABLE
    for role in PAUSABLE:
        assert _parser().parse_args(["pause", role]).role == role
    assert all(runtime.worker_class(stage).stage is stage for stage in Stage)
