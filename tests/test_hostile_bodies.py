"""Hostile request bodies and ids against the secured gateway: every one a clean 4xx, the
gateway's memory flat (the rest of the security tests: `test_security.py`)."""

from __future__ import annotations

import json
import resource
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from tests.faults import OwnRedis
from tests.faults import own_redis as own_redis
from tests.test_security import A_KEY, auth, gw
from tests.test_security import secured as secured
from vidstream.core.settings import Settings
from vidstream.runtime import Stack

# -- hostile bodies -----------------------------------------------------------------------------


def _multipart(parts: list[tuple[str, bytes]], boundary: str = "XyZ") -> bytes:
    out = b""
    for name, value in parts:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


@pytest.mark.parametrize(
    ("content_type", "body", "code"),
    [
        ("application/json", b"[" * 5000 + b"]" * 5000, "invalid_json"),
        ("application/json", b'{"source": {"key": "uploads/a/b"}, "language": "\\ud800"}',
         "invalid_json"),
        ("application/json", b'{"source": {"key": "uploads/' + b"a" * 300 + b'/x"}}',
         "invalid_key"),
        ("application/json",  # UTF-16: no quote or bracket where a UTF-8 scan looks for one
         ('{"a": "\u2200", "b": ' + "[" * 3000 + "]" * 3000 + "}").encode("utf-16-le"),
         "invalid_json"),
        ("multipart/form-data", b"no boundary here", "invalid_multipart"),
        ("multipart/form-data; boundary=XyZ", b"--XyZ\r\nContent-Disposition: form-data; na",
         "invalid_multipart"),
        ("multipart/form-data; boundary=XyZ",
         b"--XyZ\r\nBad Header\x01: x\r\n\r\nv\r\n--XyZ--\r\n", "invalid_multipart"),
        ("multipart/form-data; boundary=XyZ",
         _multipart([("language", b"en"), ("language", b"fr")]), "invalid_request"),
        ("multipart/form-data; boundary=XyZ", _multipart([("kind", b"x")] * 40),
         "invalid_request"),
        ("multipart/form-data; boundary=XyZ", _multipart([("language", b"e" * 100_000)]),
         "invalid_request"),
    ],
)  # fmt: skip
async def test_malformed_bodies_are_4xx(
    secured: Stack, http: aiohttp.ClientSession, content_type: str, body: bytes, code: str
) -> None:
    """Every malformed request gets a 4xx naming the problem, never a 5xx or a traceback, and
    never the client's value echoed back at length."""
    headers = {**auth(A_KEY), "Content-Type": content_type}
    async with http.post(f"{gw(secured)}/v1/jobs", data=body, headers=headers) as r:
        text = await r.text()
        assert 400 <= r.status < 500, text
        assert json.loads(text)["error"]["code"] == code, text
        assert len(text) < 300 and "Traceback" not in text


@pytest.mark.parametrize(
    "path",
    [
        "/v1/jobs/" + "\u0660" * 26,  # ARABIC-INDIC DIGIT ZERO
        "/v1/jobs/" + "0" * 26 + "%0A",
        "/v1/jobs/" + "0" * 26 + "/events?after=\u0661-\u0661",
        "/v1/jobs/" + "0" * 26 + "/events?after=99999999999999999999-0",
    ],
)
async def test_odd_ids_are_client_errors(
    secured: Stack, http: aiohttp.ClientSession, path: str
) -> None:
    """Non-ASCII digits, a trailing newline or an id past 64 bits: a 4xx, never a 5xx."""
    async with http.get(gw(secured) + path, headers=auth(A_KEY)) as r:
        assert r.status in (400, 404), await r.text()


async def test_a_huge_form_field_does_not_grow_the_gateway(
    secured: Stack, http: aiohttp.ClientSession
) -> None:
    """A 64 MB option field is refused after its first 16 KB: the gateway's memory stays flat."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    async def body() -> AsyncIterator[bytes]:
        yield b'--XyZ\r\nContent-Disposition: form-data; name="language"\r\n\r\n'
        chunk = b"e" * 1024 * 1024
        for _ in range(64):
            yield chunk
        yield b"\r\n--XyZ--\r\n"

    headers = {**auth(A_KEY), "Content-Type": "multipart/form-data; boundary=XyZ"}
    try:
        async with http.post(f"{gw(secured)}/v1/jobs", data=body(), headers=headers) as r:
            assert r.status == 400
    except aiohttp.ClientOSError:
        pass  # the gateway may answer and close before the client sent it all: also a refusal
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 40, f"peak RSS grew by {grown_mb:.0f} MB"


async def test_readyz_names_what_is_down_without_details(
    make_settings: Callable[..., Settings], http: aiohttp.ClientSession, own_redis: OwnRedis
) -> None:
    """/readyz says which dependency is down, not the exception text behind it."""
    async with Stack(
        make_settings(redis_url=own_redis.url, redis_timeout_s=0.5), ("gateway",)
    ) as st:
        await own_redis.stop()
        async with http.get(f"{gw(st)}/readyz") as r:
            assert r.status == 503
            assert (await r.json())["checks"] == {"redis": "unavailable", "storage": "ok"}
        await own_redis.start()
