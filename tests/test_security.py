"""Safe on the internet: API keys and tenants on every route, single-use upload links, WebSocket
tokens and origins, CORS, rate limits and overload, and request bodies built to hurt."""

from __future__ import annotations

import json
import resource
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.test_redis_outage import OwnRedis
from tests.test_redis_outage import own_redis as own_redis
from vidstream.auth import KeyRing, KeysFile, new_key
from vidstream.jobs import ErrorInfo, Stage
from vidstream.protocol import Claim, Fail
from vidstream.runtime import Stack
from vidstream.settings import Settings

A_KEY = "vs_aaaa0000_key-of-tenant-a-for-the-security-tests"
B_KEY = "vs_bbbb0000_key-of-tenant-b-for-the-security-tests"
ORIGIN = "https://app.example"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def secured(make_settings: Callable[..., Settings], redis: Redis) -> AsyncIterator[Stack]:
    """Gateway and notifier with two tenants' keys, as exposed to the internet."""
    settings = make_settings(
        auth="on", api_keys=f"a:{A_KEY},b:sha256:{_sha(B_KEY)}", cors_origins=(ORIGIN,),
        max_upload_bytes=200_000,
    )  # fmt: skip
    async with Stack(settings, ("gateway", "notifier")) as stack:
        yield stack


def _sha(key: str) -> str:
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()


def gw(stack: Stack) -> str:
    assert stack.gateway is not None
    return stack.gateway.url


async def error_of(r: aiohttp.ClientResponse, status: int) -> str:
    body = await r.json()
    assert r.status == status, body
    assert set(body) == {"error"}, body
    return str(body["error"]["code"])


async def upload(http: aiohttp.ClientSession, stack: Stack, key: str, data: bytes) -> str:
    body = {"filename": "talk.mp4", "content_type": "video/mp4", "size": len(data)}
    async with http.post(f"{gw(stack)}/v1/uploads", json=body, headers=auth(key)) as r:
        assert r.status == 201, await r.text()
        ticket: dict[str, Any] = await r.json()
    async with http.put(ticket["upload_url"], data=data, headers=ticket["headers"]) as r:
        assert r.status == 200, await r.text()
    return str(ticket["key"])


async def create(http: aiohttp.ClientSession, stack: Stack, key: str, source: str) -> Any:
    async with http.post(
        f"{gw(stack)}/v1/jobs", json={"source": {"key": source}}, headers=auth(key)
    ) as r:
        assert r.status == 202, await r.text()
        return await r.json()


# -- keys and tenants ----------------------------------------------------------------------


async def test_every_v1_route_needs_a_key(secured: Stack, http: aiohttp.ClientSession) -> None:
    """No key or a wrong key is a 401 on every /v1 route; health, the API document and signed
    object links need none."""
    base, job = gw(secured), "0" * 26
    calls = [
        ("POST", "/v1/uploads"), ("POST", "/v1/jobs"), ("GET", f"/v1/jobs/{job}"),
        ("GET", f"/v1/jobs/{job}/events"), ("DELETE", f"/v1/jobs/{job}"),
        ("POST", f"/v1/jobs/{job}/retry"), ("GET", "/v1/dead-letters"),
    ]  # fmt: skip
    for method, path in calls:
        for headers in ({}, auth("vs_nope_wrong"), {"Authorization": A_KEY}):
            async with http.request(method, base + path, headers=headers) as r:
                assert await error_of(r, 401) == "unauthorized", (method, path)
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
    for path in ("/healthz", "/readyz", "/v1/openapi.json"):
        async with http.get(base + path) as r:
            assert r.status == 200, path


async def test_another_tenant_sees_nothing(secured: Stack, http: aiohttp.ClientSession) -> None:
    """Tenant b gets 404 for everything of tenant a's (never 403): its job, events, cancel,
    retry, dead letters, upload key and idempotency key."""
    base = gw(secured)
    key = await upload(http, secured, A_KEY, b"\0" * 100)
    job = await create(http, secured, A_KEY, key)
    assert job["tenant"] == "a"
    # A dead letter of tenant a's, made the way a worker makes one.
    assert secured.services is not None
    jobs = secured.services.jobs
    stored = await jobs.get(job["id"])
    assert stored is not None
    await jobs.apply(job["id"], Claim.of(stored, Stage.TRANSCRIBE, owner="w:1", lease_ms=60_000,
                                         max_attempts=3))  # fmt: skip
    failed = Fail(error=ErrorInfo("ffmpeg_failed", "x"), owner="w:1", dead_letter=Stage.TRANSCRIBE)
    assert (await jobs.apply(job["id"], failed)).ok
    async with http.get(f"{base}/v1/dead-letters", headers=auth(B_KEY)) as r:
        assert (await r.json())["dead_letters"] == []
    async with http.get(f"{base}/v1/dead-letters", headers=auth(A_KEY)) as r:
        assert [d["job_id"] for d in (await r.json())["dead_letters"]] == [job["id"]]

    for method, path in [
        ("GET", f"/v1/jobs/{job['id']}"), ("GET", f"/v1/jobs/{job['id']}/events"),
        ("DELETE", f"/v1/jobs/{job['id']}"), ("POST", f"/v1/jobs/{job['id']}/retry"),
    ]:  # fmt: skip
        async with http.request(method, base + path, headers=auth(B_KEY)) as r:
            assert await error_of(r, 404) == "not_found", (method, path)
        async with http.request(method, base + path, headers=auth(A_KEY)) as r:
            assert r.status < 400 or r.status == 409, (method, path, await r.text())
    # b cannot use a's upload, not even with a's Idempotency-Key.
    other = await upload(http, secured, A_KEY, b"\0" * 100)
    headers = {**auth(B_KEY), "Idempotency-Key": "same-key"}
    async with http.post(f"{base}/v1/jobs", json={"source": {"key": other}}, headers=headers) as r:
        assert await error_of(r, 400) == "source_not_found"
    headers_a = {**auth(A_KEY), "Idempotency-Key": "same-key"}
    async with http.post(
        f"{base}/v1/jobs", json={"source": {"key": other}}, headers=headers_a
    ) as r:
        assert r.status == 202
        mine = await r.json()
    async with http.post(f"{base}/v1/jobs", json={"source": {"key": other}}, headers=headers) as r:
        assert await error_of(r, 400) == "source_not_found"  # b's key space is b's own
    async with http.post(
        f"{base}/v1/jobs", json={"source": {"key": other}}, headers=headers_a
    ) as r:
        assert r.status == 200 and (await r.json())["id"] == mine["id"]


async def test_an_upload_is_used_once(secured: Stack, http: aiohttp.ClientSession) -> None:
    """An upload link uploads once, and its key makes one job."""
    body = {"filename": "a.mp4", "content_type": "video/mp4", "size": 10}
    async with http.post(f"{gw(secured)}/v1/uploads", json=body, headers=auth(A_KEY)) as r:
        ticket = await r.json()
    async with http.put(ticket["upload_url"], data=b"x" * 10, headers=ticket["headers"]) as r:
        assert r.status == 200
    async with http.put(ticket["upload_url"], data=b"y" * 10, headers=ticket["headers"]) as r:
        assert await error_of(r, 403) == "link_used"
    await create(http, secured, A_KEY, ticket["key"])
    async with http.post(
        f"{gw(secured)}/v1/jobs", json={"source": {"key": ticket["key"]}}, headers=auth(A_KEY)
    ) as r:
        assert await error_of(r, 400) == "source_not_found"


async def test_keys_file_keys_work_and_revoking_stops_them(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key created in the keys file is accepted, kept only as a hash, and refused once
    revoked, without a restart."""
    monkeypatch.setattr("vidstream.auth.RELOAD_EVERY_S", 0.0)
    settings = make_settings(auth="on")
    ring = KeyRing(settings)
    assert len(ring) == 0
    key, record = new_key("acme", label="ci")
    file = KeysFile(settings.data_dir / "api-keys.jsonl")
    file.add(record)
    assert key not in file.path.read_text() and record.hash in file.path.read_text()
    found = ring.find(key)
    assert found is not None and found.tenant == "acme"
    assert ring.find(key + "x") is None and ring.find("x" * 10_000) is None
    assert file.revoke(record.id)
    assert ring.find(key) is None


async def test_roles_refuse_to_start_without_keys(make_settings: Callable[..., Settings]) -> None:
    """A gateway exposed without any key refuses to start, naming the fix."""
    from vidstream.errors import ConfigError

    with pytest.raises(ConfigError, match="keys create"):
        async with Stack(make_settings(auth="on"), ("gateway",)):
            pass


# -- WebSocket tokens and origins ------------------------------------------------------------


async def subscribe(url: str, job_id: str, token: str, **headers: str) -> dict[str, Any]:
    async with connect(url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "subscribe", "job_id": job_id, "token": token}))
        reply: dict[str, Any] = json.loads(await ws.recv())
        return reply


async def test_ws_tokens_open_their_own_job_only(
    secured: Stack, http: aiohttp.ClientSession
) -> None:
    """A job's token or its tenant's API key opens it; a forged, expired, other job's or other
    tenant's token gets `forbidden` and nothing about the job."""
    assert secured.services is not None and secured.notifier is not None
    url, signer = secured.notifier.url, secured.services.signer
    job = await create(http, secured, A_KEY, await upload(http, secured, A_KEY, b"\0" * 10))
    other = await create(http, secured, A_KEY, await upload(http, secured, A_KEY, b"\0" * 10))
    assert (await subscribe(url, job["id"], job["ws_token"]))["type"] == "snapshot"
    assert (await subscribe(url, job["id"], A_KEY))["type"] == "snapshot"
    long_ago = time.time() - 10 * 86400
    expired = signer.ws_token("a", job["id"], long_ago, 3600, now=long_ago)
    forged = job["ws_token"].split(".")[0] + ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    for token in (other["ws_token"], B_KEY, expired, forged, "", "é"):
        reply = await subscribe(url, job["id"], token)
        assert (reply["type"], reply["code"]) == ("error", "forbidden"), token
        assert "job" not in reply
    unknown = await subscribe(url, "0" * 26, job["ws_token"])
    assert (unknown["code"], unknown["message"]) == ("forbidden", reply["message"])


async def test_the_notifier_checks_the_browser_origin(secured: Stack) -> None:
    """A page on another site cannot open the WebSocket; the app's own origin and non-browser
    clients (no Origin) can."""
    assert secured.notifier is not None
    url = secured.notifier.url
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, origin="https://evil.example"):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403
    async with connect(url, origin=ORIGIN):  # type: ignore[arg-type]
        pass
    async with connect(url):
        pass


# -- limits -----------------------------------------------------------------------------------


async def test_rate_limit_and_overload_answer_with_retry_after(
    make_settings: Callable[..., Settings], http: aiohttp.ClientSession, redis: Redis
) -> None:
    """Past RATE_LIMIT_PER_MIN a key gets 429, past MAX_QUEUE_DEPTH new jobs get 503
    `overloaded`; both say when to come back."""
    settings = make_settings(auth="on", api_keys=f"a:{A_KEY}", rate_limit_per_min=5,
                             max_queue_depth=2)  # fmt: skip
    async with Stack(settings, ("gateway",)) as stack:
        for _ in range(5):
            async with http.get(f"{gw(stack)}/v1/dead-letters", headers=auth(A_KEY)) as r:
                assert r.status == 200
        async with http.get(f"{gw(stack)}/v1/dead-letters", headers=auth(A_KEY)) as r:
            assert await error_of(r, 429) == "rate_limited"
            assert int(r.headers["Retry-After"]) >= 1
    settings = make_settings(auth="on", api_keys=f"a:{A_KEY}", max_queue_depth=2)
    async with Stack(settings, ("gateway",)) as stack:
        for _ in range(2):
            await create(http, stack, A_KEY, await upload(http, stack, A_KEY, b"\0" * 10))
        await _wait_for_queue_check()
        key = await upload(http, stack, A_KEY, b"\0" * 10)
        async with http.post(
            f"{gw(stack)}/v1/jobs", json={"source": {"key": key}}, headers=auth(A_KEY)
        ) as r:
            assert await error_of(r, 503) == "overloaded"
            assert r.headers["Retry-After"] == "30"


async def _wait_for_queue_check() -> None:
    """The gateway reads the queue depth at most once a second; let that second pass."""
    import asyncio

    from vidstream.http.jobs import QUEUE_CHECK_S

    await asyncio.sleep(QUEUE_CHECK_S)  # the cache's own period, not synchronisation


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
