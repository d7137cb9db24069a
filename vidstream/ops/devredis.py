"""`vidstream dev` and `make run` need a Redis: use the one at REDIS_URL, or start a private one.

The private server keeps its data under `<data dir>/redis` with the append-only file on, so jobs
survive a restart of `vidstream dev`, and it stops when vidstream stops.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
from pathlib import Path
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.exceptions import RedisError

from vidstream.core import logs, process
from vidstream.core.errors import ConfigError
from vidstream.core.lifecycle import Component

_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "")


async def answers(url: str, timeout_s: float = 1.0) -> bool:
    client: Redis = Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


class PrivateRedis(Component):
    def __init__(self, url: str, data_dir: Path) -> None:
        self.url = url
        self.dir = Path(data_dir) / "redis"
        self.proc: asyncio.subprocess.Process | None = None
        self._log: process.Tail | None = None
        self.log = logs.get(role="dev")

    async def start(self) -> None:
        """Start a private redis-server unless one answers at the URL already; idempotent."""
        if self.proc is not None or await answers(self.url):
            return
        parts = urlsplit(self.url)
        binary = shutil.which("redis-server")
        if parts.scheme != "redis" or parts.hostname not in _LOCAL_HOSTS or binary is None:
            raise ConfigError(
                f"nothing answers at REDIS_URL={self.url} and no local redis-server can be started "
                "(install redis-server, or point REDIS_URL at a running Redis)"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        port = str(parts.port or 6379)
        self.proc = await process.spawn(
            [
                binary,
                "--loglevel",
                "notice",
                "--bind",
                "127.0.0.1",
                "--port",
                port,
                "--dir",
                str(self.dir.resolve()),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--daemonize",
                "no",
            ],
            stdout=process.PIPE,
            stderr=process.STDOUT,
            death_signal=signal.SIGTERM,  # it writes its AOF and exits if `vidstream dev` dies
        )
        await self._ready()
        self.log.info("private_redis_started", url=self.url, dir=str(self.dir))

    async def _ready(self) -> None:
        """Wait for redis-server to say it accepts connections; keep draining its log after."""
        assert self.proc is not None
        assert self.proc.stdout is not None
        said: list[str] = []
        async with asyncio.timeout(15):
            while line := (await self.proc.stdout.readline()).decode(errors="replace"):
                said.append(line.strip())
                if "Ready to accept connections" in line:
                    self._log = process.Tail(self.proc.stdout)
                    return
        raise ConfigError(f"redis-server failed to start: {' '.join(said[-3:])[-300:]}")

    async def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            await process.terminate(proc, grace_s=10.0)  # SIGTERM: redis flushes its AOF
        if self._log is not None:
            self._log.cancel()
