"""One webhook attempt over HTTP, connected only to addresses `targets.resolve` checked.

The connector's resolver answers with those addresses and never looks the host up again, so
the request cannot land anywhere else; TLS still verifies the certificate against the host
name. No proxy from the environment, no redirects (a 3xx counts as a failure), and nothing of
the answer is read beyond its status.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from vidstream.webhooks.targets import Resolved, resolve


class PinnedResolver(AbstractResolver):
    """A resolver that knows only the addresses it was given."""

    def __init__(self, addresses: list[Resolved]) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        return [
            ResolveResult(
                hostname=host, host=a.host, port=a.port, family=a.family, proto=0, flags=flags
            )
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    location: str | None = None  # where a 3xx pointed (not followed)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


async def post(
    url: str, body: bytes, headers: dict[str, str], *, allow_private: bool, timeout_s: float
) -> Answer:
    """POST `body` to `url` once. Raises `TargetRefused` for a target webhooks may not reach;
    `aiohttp.ClientError`, `OSError` or `TimeoutError` when no answer came in `timeout_s`."""
    target = URL(url)
    if target.raw_host is None or target.port is None:
        raise aiohttp.InvalidURL(url)
    # One bound for the whole attempt: resolving, connecting, sending, the answer's headers.
    async with asyncio.timeout(timeout_s):
        addresses = await resolve(
            target.raw_host, target.port, allow_private=allow_private, timeout_s=timeout_s
        )
        connector = aiohttp.TCPConnector(
            resolver=PinnedResolver(addresses), use_dns_cache=False, force_close=True
        )
        session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s), trust_env=False
        )
        async with (
            session,
            session.post(target, data=body, headers=headers, allow_redirects=False) as response,
        ):
            return Answer(response.status, response.headers.get("Location"))
