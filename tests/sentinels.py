"""Redis replication and Sentinel of a test's own, on free local ports: a primary, a replica,
three Sentinels watching them. Each process's log is read as it comes, and the tests wait on
what it says (a replica in sync, Sentinels that know each other, a new primary), never on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.conftest import free_port

MASTER_NAME = "vstest"
# Short enough that a failover takes a few seconds, long enough that a busy test machine does not
# take a slow reply for a dead primary.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 10_000


class Server:
    """One redis-server (or Sentinel) process, its log kept line by line as it comes."""

    def __init__(self, name: str, directory: Path, port: int, args: list[str]) -> None:
        self.name, self.dir, self.port, self.args = name, directory, port, args
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._news = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, ready: str = "Ready to accept connections") -> None:
        args = list(self.args)
        # Debian's redis-sentinel is redis-server under another name, which runs as Sentinel.
        if "--sentinel" in args and shutil.which("redis-sentinel"):
            args.remove("--sentinel")
            binary = shutil.which("redis-sentinel")
        else:
            binary = shutil.which("redis-server")
        assert binary, "redis-server is needed (make test installs it)"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            binary, *args, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.dir), "--logfile", "", stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        await self.wait_for(re.escape(ready))

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            async with self._news:
                self.lines.append(raw.decode(errors="replace").rstrip())
                self._news.notify_all()

    async def wait_for(self, pattern: str, count: int = 1, timeout_s: float = 15.0) -> None:
        """Return once `count` lines of the log match `pattern`."""

        def seen() -> bool:
            return sum(1 for line in self.lines if re.search(pattern, line)) >= count

        try:
            async with asyncio.timeout(timeout_s), self._news:
                await self._news.wait_for(seen)
        except TimeoutError:
            tail = "\n".join(self.lines[-20:])
            raise AssertionError(f"{self.name}: no {count} x {pattern!r} in:\n{tail}") from None

    def kill(self) -> None:
        """SIGKILL: nothing is written, flushed or replicated any more."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.thaw()
            self.proc.kill()
        if self.proc is not None:
            await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)


class Replicated:
    """A primary and one replica of it, without persistence (a killed primary's writes that
    had not reached the replica are gone, as on a lost host)."""

    def __init__(self, directory: Path, primary_args: tuple[str, ...] = ()) -> None:
        # No wait for other replicas before a full sync (5 s by default).
        plain = ["--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0"]
        self.primary = Server("primary", directory / "primary", free_port(),
                              [*plain, *primary_args])  # fmt: skip
        port = self.primary.port
        self.replica = Server("replica", directory / "replica", free_port(),
                              [*plain, "--replicaof", "127.0.0.1", str(port)])  # fmt: skip

    def url(self, server: Server) -> str:
        return f"redis://{server.address}/0"

    async def start(self) -> None:
        await self.primary.start()
        await self.replica.start()
        await self.replica.wait_for("MASTER <-> REPLICA sync: Finished with success")
        await self.counted()

    async def counted(self, timeout_s: float = 10.0) -> None:
        """Return once the primary counts its replica as good (its first acknowledgement came
        in, about a second after the sync): before it, `min-replicas-to-write` refuses writes."""
        primary = Redis.from_url(self.url(self.primary), decode_responses=True)
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    info = await primary.info("replication")
                    good = info.get("min_slaves_good_slaves", info.get("connected_slaves", 0))
                    if int(good) >= 1:
                        return
                    await asyncio.sleep(0.05)  # INFO has no notification: a bounded poll
        finally:
            await primary.aclose()

    async def cut(self) -> None:
        """Stop replication here: the replica frozen, and its link closed by the primary (what
        the primary sent before lies in the replica's socket, and would still arrive), so what
        the primary takes from now on stays on the primary."""
        self.replica.freeze()
        primary = Redis.from_url(self.url(self.primary))
        try:
            assert await primary.client_kill_filter(_type="replica") == 1
        finally:
            await primary.aclose()

    async def rejoin(self) -> None:
        """Let the replica go on: it reconnects and catches up on what it missed."""
        caught_up = "Successful partial resynchronization|sync: Finished with success"
        done = sum(1 for line in self.replica.lines if re.search(caught_up, line))
        self.replica.thaw()
        await self.replica.wait_for(caught_up, count=done + 1)

    async def stop(self) -> None:
        await self.replica.stop()
        await self.primary.stop()


class Sentinels:
    """Three Sentinels watching `servers.primary` under MASTER_NAME, with a quorum of two."""

    def __init__(self, servers: Replicated, directory: Path) -> None:
        self.servers = servers
        self.nodes = []
        for i in range(3):
            conf = directory / f"sentinel-{i}" / "sentinel.conf"  # Sentinel rewrites its file
            self.nodes.append(Server(f"sentinel-{i}", conf.parent, free_port(),
                                     [str(conf), "--sentinel"]))  # fmt: skip

    @property
    def addresses(self) -> tuple[str, ...]:
        """REDIS_SENTINELS."""
        return tuple(node.address for node in self.nodes)

    async def start(self) -> None:
        primary = self.servers.primary.port
        for node in self.nodes:
            node.dir.mkdir(parents=True, exist_ok=True)
            (node.dir / "sentinel.conf").write_text(
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            )
        await asyncio.gather(*(node.start(ready="+monitor master") for node in self.nodes))
        # Agreed: each knows the replica (a candidate) and the two other Sentinels (a quorum
        # and a majority to elect the one that runs the failover).
        for node in self.nodes:
            await node.wait_for(r"\+slave slave")
            await node.wait_for(r"\+sentinel sentinel", count=2)

    async def failed_over(self, timeout_s: float = 30.0) -> None:
        """Return once every Sentinel names the replica as the primary."""
        replica = self.servers.replica.port
        for node in self.nodes:
            await node.wait_for(
                rf"\+switch-master {MASTER_NAME} .* {replica}$", timeout_s=timeout_s
            )

    async def stop(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes))


@pytest.fixture
async def replicated(tmp_path: Path) -> AsyncIterator[Replicated]:
    servers = Replicated(tmp_path / "redis")
    try:
        await servers.start()
        yield servers
    finally:
        await servers.stop()


@pytest.fixture
async def sentinels(replicated: Replicated, tmp_path: Path) -> AsyncIterator[Sentinels]:
    watchers = Sentinels(replicated, tmp_path / "sentinels")
    try:
        await watchers.start()
        yield watchers
    finally:
        await watchers.stop()
