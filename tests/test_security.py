"""Safe on the internet: API keys and tenants on every route, single-use upload links, WebSocket
tokens and origins, CORS, rate limits and overload, and request bodies built to hurt."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import cli
from tests.faults import own_redis as own_redis
from vidstream.core.auth import KeyRing, KeysFile, new_key
from vidstream.core.settings import Settings
from vidstream.http.app import create_app
from vidstream.http.auth import needs_key
from vidstream.job.model import ErrorInfo, Stage
from vidstream.job.protocol import Claim, Fail
from vidstream.runtime import Stack

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
    """No key or a wrong key is a 401 on every /v1 route of the gateway's route table; health,
    the API documents and signed object links need none."""
    assert secured.services is not None and secured.gateway is not None
    base, checked, open_paths = gw(secured), [], set()
    app = create_app(secured.services, secured.gateway.urls)
    for route in app.router.routes():
        canonical = route.resource.canonical if route.resource else ""
        path = re.sub(r"\{[^}]*\}", "0" * 26, canonical)
        if route.method in ("HEAD", "OPTIONS") or not path.startswith("/v1/"):
            continue
        if not needs_key(path):
            open_paths.add(canonical)
            continue
        checked.append((route.method, path))
        tries = [({}, path), (auth("vs_nope_wrong"), path), ({"Authorization": A_KEY}, path)]
        if not canonical.endswith("/events"):  # `?token=` opens the events route only, not
            # another route's path that happens to end in /events (a template named so).
            events = re.sub(r"\{[^}]*\}", "events", canonical)
            tries += [({}, f"{path}?token={A_KEY}"), ({}, f"{events}?token={A_KEY}")]
        for headers, target in tries:
            async with http.request(route.method, base + target, headers=headers) as r:
                assert await error_of(r, 401) == "unauthorized", (route.method, target)
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert len(checked) >= 15, checked  # the route table was read, not a few routes
    assert open_paths == {
        "/v1/objects/{key}",
        "/v1/openapi.json",
        "/v1/schemas/timeline.json",
        "/v1/kinds",
        "/v1/models",
    }
    for path in ("/healthz", "/readyz", "/v1/openapi.json", "/v1/schemas/timeline.json",
                 "/v1/kinds", "/v1/models"):  # fmt: skip
        async with http.get(base + path) as r:
            assert r.status == 200, path
    async with http.get(f"{base}/v1/objects/uploads/0/source") as r:  # unsigned: refused,
        assert await error_of(r, 403) == "invalid_signature"  # by its signature, not a key
    # A job's event stream opened with `?token=` is the one exception (its handler checks it).
    async with http.get(f"{base}/v1/jobs/{'0' * 26}/events?token=x") as r:
        assert await error_of(r, 404) == "not_found"


async def test_the_api_document_describes_every_route(
    secured: Stack, http: aiohttp.ClientSession
) -> None:
    """`GET /v1/openapi.json` holds every route of the API, and says which need no key."""
    assert secured.services is not None and secured.gateway is not None
    async with http.get(f"{gw(secured)}/v1/openapi.json") as r:
        paths = (await r.json())["paths"]
    app = create_app(secured.services, secured.gateway.urls)
    for route in app.router.routes():
        canonical = route.resource.canonical if route.resource else ""
        if route.method in ("HEAD", "OPTIONS") or not canonical.startswith(("/v1/", "/healthz",
                                                                           "/readyz")):  # fmt: skip
            continue
        operation = paths.get(canonical, {}).get(route.method.lower())
        assert operation is not None, f"{route.method} {canonical} is not in the document"
        open_route = not needs_key(canonical) or not canonical.startswith("/v1/")
        assert (operation.get("security") == []) == open_route, (route.method, canonical)


async def test_another_tenant_sees_nothing(secured: Stack, http: aiohttp.ClientSession) -> None:
    """Tenant b gets 404 for everything of tenant a's (never 403): its job, events (also as a
    stream opened with b's key or b's job's token), cancel, retry; b's dead letters and job list
    hold none of a's; nor can b use a's upload key or idempotency key."""
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

    # Nor in the listing, nor as an event stream opened with b's key or b's job's token.
    async with http.get(f"{base}/v1/jobs", headers=auth(B_KEY)) as r:
        assert job["id"] not in [j["id"] for j in (await r.json())["jobs"]]
    async with http.get(f"{base}/v1/jobs", headers=auth(A_KEY)) as r:
        assert job["id"] in [j["id"] for j in (await r.json())["jobs"]]
    b_job = await create(http, secured, B_KEY, await upload(http, secured, B_KEY, b"\0" * 10))
    sse = {"Accept": "text/event-stream"}
    for token in (B_KEY, b_job["ws_token"], job["ws_token"] + "x"):
        url = f"{base}/v1/jobs/{job['id']}/events?token={token}"
        async with http.get(url, headers=sse) as r:
            assert await error_of(r, 404) == "not_found", token
    async with http.get(f"{base}/v1/jobs/{job['id']}/events?token={job['ws_token']}",
                        headers=sse) as r:  # fmt: skip
        assert r.status == 200 and r.content_type == "text/event-stream"
        assert b"event: snapshot" in await r.read()  # the job has failed: the snapshot is all
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
    monkeypatch.setattr("vidstream.core.auth.RELOAD_EVERY_S", 0.0)
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


async def test_roles_refuse_to_start_without_keys(
    make_settings: Callable[..., Settings], redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gateway or a notifier exposed without any key refuses to start, naming the fix; with
    VIDSTREAM_AUTH=off set explicitly, or under `vidstream dev`, it starts and says so loudly."""
    from vidstream.core.errors import ConfigError

    for role in ("gateway", "notifier"):
        with pytest.raises(ConfigError, match="keys create"):
            async with Stack(make_settings(auth="on"), (role,)):
                pass
    capsys.readouterr()
    for role in ("gateway", "notifier"):
        async with Stack(make_settings(auth="off"), (role,)) as stack:
            assert stack.services is not None and stack.services.api_keys is None
        logged = capsys.readouterr().err
        assert "authentication_off" in logged and "VIDSTREAM_AUTH=off" in logged, role
    async with Stack(make_settings(auth="on"), ("gateway",), dev=True):
        pass
    logged = capsys.readouterr().err
    assert "authentication_off" in logged and "no API keys exist" in logged


async def test_the_keys_command_creates_lists_and_revokes(
    make_settings: Callable[..., Settings], role_env: dict[str, str], http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """`vidstream keys create` prints the key alone, keeps only its hash, and the gateway takes
    it; `keys list --json` lists it (never the key); `keys revoke` stops it."""
    monkeypatch.setattr("vidstream.core.auth.RELOAD_EVERY_S", 0.0)
    settings = make_settings(auth="on")
    status, out = await cli(role_env, "keys", "create", "--tenant", "acme", "--label", "ci")
    assert status == 0, out
    key = out.removesuffix("\n")
    assert re.fullmatch(r"vs_[0-9a-f]{8}_[A-Za-z0-9_-]{40,}", key), out  # the key alone
    stored = (settings.data_dir / "api-keys.jsonl").read_text()
    assert key not in stored and _sha(key) in stored
    listing = asyncio.create_task(cli(role_env, "keys", "list", "--json"))
    async with Stack(settings, ("gateway",)) as stack:
        async with http.get(f"{gw(stack)}/v1/jobs", headers=auth(key)) as r:
            assert r.status == 200, await r.text()
        status, out = await listing
        assert status == 0, out
        (listed,) = json.loads(out)["keys"]
        assert (listed["tenant"], listed["label"], listed["admin"]) == ("acme", "ci", False)
        assert key.startswith(f"vs_{listed['id']}_") and _sha(key) not in out
        status, out = await cli(role_env, "keys", "revoke", listed["id"])
        assert (status, out) == (0, f"revoked {listed['id']}\n")
        async with http.get(f"{gw(stack)}/v1/jobs", headers=auth(key)) as r:
            assert await error_of(r, 401) == "unauthorized"


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


async def test_connections_per_address_are_capped(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """Past WS_MAX_CONNECTIONS_PER_IP open connections from one address, the next is refused
    with 429; the open ones go on working."""
    settings = make_settings(auth="on", api_keys=f"a:{A_KEY}", ws_max_connections_per_ip=2)
    async with Stack(settings, ("notifier",)) as stack:
        assert stack.notifier is not None
        url = stack.notifier.url
        async with connect(url) as first, connect(url) as second:
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url):
                    pass
            assert refused.value.response.status_code == 429
            for ws in (first, second):
                await ws.send(json.dumps({"type": "ping"}))
                assert json.loads(await ws.recv()) == {"type": "pong"}


async def test_a_connection_guessing_tokens_is_closed(secured: Stack) -> None:
    """Each refused subscribe is answered `forbidden`; the one after MAX_REFUSED (the 11th)
    closes the connection with 1008."""
    from websockets.exceptions import ConnectionClosed

    from vidstream.notifier.server import MAX_REFUSED

    assert secured.notifier is not None
    async with asyncio.timeout(10), connect(secured.notifier.url) as ws:
        guess = {"type": "subscribe", "job_id": "0" * 26, "token": "guess"}
        for _ in range(MAX_REFUSED):
            await ws.send(json.dumps(guess))
            assert json.loads(await ws.recv())["code"] == "forbidden"
        await ws.send(json.dumps(guess))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


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


async def test_compose_jobs_count_towards_overload(
    make_settings: Callable[..., Settings], http: aiohttp.ClientSession, redis: Redis
) -> None:
    """Compose jobs, which wait for render rather than transcribe, fill MAX_QUEUE_DEPTH too:
    past it the next compose job and the next subtitle job both get 503 `overloaded`."""
    settings = make_settings(auth="on", api_keys=f"a:{A_KEY}", max_queue_depth=2)
    clip = {"type": "color", "color": "#ff0000", "start": 0, "duration": 1}
    colour = {"kind": "compose", "timeline": {"output": {"width": 320, "height": 240},
                                              "tracks": [{"clips": [clip]}]}}  # fmt: skip
    async with Stack(settings, ("gateway",)) as stack:
        for _ in range(2):
            async with http.post(f"{gw(stack)}/v1/jobs", json=colour, headers=auth(A_KEY)) as r:
                assert r.status == 202, await r.text()
        await _wait_for_queue_check()
        async with http.post(f"{gw(stack)}/v1/jobs", json=colour, headers=auth(A_KEY)) as r:
            assert await error_of(r, 503) == "overloaded"
        key = await upload(http, stack, A_KEY, b"\0" * 10)
        async with http.post(
            f"{gw(stack)}/v1/jobs", json={"source": {"key": key}}, headers=auth(A_KEY)
        ) as r:
            assert await error_of(r, 503) == "overloaded"


async def test_event_stream_token_guesses_are_throttled(
    make_settings: Callable[..., Settings], http: aiohttp.ClientSession, redis: Redis
) -> None:
    """`?token=` on an event stream needs no key, so its refusals count per address: past
    RATE_LIMIT_PER_MIN of them, that address gets 429 with Retry-After, even for a good token,
    while a key's own requests go on."""
    settings = make_settings(auth="on", api_keys=f"a:{A_KEY}", rate_limit_per_min=3)
    async with Stack(settings, ("gateway",)) as stack:
        job = await create(http, stack, A_KEY, await upload(http, stack, A_KEY, b"\0" * 10))
        events = f"{gw(stack)}/v1/jobs/{job['id']}/events"
        async with http.get(f"{events}?token={job['ws_token']}") as r:
            assert r.status == 200  # a good token is no refusal: it counts for nothing
        for attempt in range(3):
            async with http.get(f"{events}?token=guess{attempt}") as r:
                assert await error_of(r, 404) == "not_found"
        for token in ("guess3", job["ws_token"]):
            async with http.get(f"{events}?token={token}") as r:
                assert await error_of(r, 429) == "rate_limited"
                assert int(r.headers["Retry-After"]) >= 1
        async with http.get(events, headers=auth(A_KEY)) as r:
            assert r.status == 200


async def _wait_for_queue_check() -> None:
    """The gateway reads the queue depth at most once a second; let that second pass."""
    import asyncio

    from vidstream.http.jobs import QUEUE_CHECK_S

    await asyncio.sleep(QUEUE_CHECK_S)  # the cache's own period, not synchronisation
