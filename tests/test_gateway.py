"""The REST contract: validation errors, signed upload URLs, reading and cancelling jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import aiohttp
import pytest
from redis.asyncio import Redis

from vidstream.core.settings import Settings
from vidstream.runtime import Stack


@pytest.fixture
async def api(make_settings: Callable[..., Settings], redis: Redis) -> AsyncIterator[Stack]:
    """The gateway and notifier only: jobs stay queued, which is all these tests need."""
    settings = make_settings(max_upload_bytes=200_000, cors_origins=("https://app.example",))
    async with Stack(settings, ("gateway", "notifier")) as stack:
        yield stack


def gw(stack: Stack) -> str:
    assert stack.gateway is not None
    return stack.gateway.url


async def expect_error(response: aiohttp.ClientResponse, status: int, code: str) -> str:
    body = await response.json()
    assert response.status == status, body
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return str(body["error"]["message"])


async def upload(
    http: aiohttp.ClientSession, stack: Stack, data: bytes, name: str = "a.mp4"
) -> str:
    """Ask for an upload URL, PUT `data` to it; return the key."""
    body = {"filename": name, "content_type": "video/mp4", "size": len(data)}
    async with http.post(f"{gw(stack)}/v1/uploads", json=body) as r:
        assert r.status == 201
        ticket: dict[str, Any] = await r.json()
    assert ticket["method"] == "PUT" and ticket["key"].startswith("uploads/")
    async with http.put(ticket["upload_url"], data=data, headers=ticket["headers"]) as r:
        assert r.status == 200, await r.text()
    return str(ticket["key"])


async def test_health_and_readiness(api: Stack, http: aiohttp.ClientSession) -> None:
    """/healthz answers while the process runs; /readyz reports Redis and storage reachable."""
    async with http.get(f"{gw(api)}/healthz") as r:
        assert r.status == 200
    async with http.get(f"{gw(api)}/readyz") as r:
        assert r.status == 200
        assert (await r.json())["checks"] == {"redis": "ok", "storage": "ok"}


@pytest.mark.parametrize(
    ("body", "code", "needle"),
    [
        ({"source": {"key": "uploads/x/a.mp4"}, "colour": "red"}, "invalid_request", "colour"),
        ({"language": "en"}, "invalid_request", "source"),
        ({"source": {"key": "jobs/other/transcript.json"}}, "invalid_key", "uploads/"),
        ({"source": {"key": "uploads/../secret"}}, "invalid_key", ".."),
        ({"source": {"key": "/etc/passwd"}}, "invalid_key", "relative"),
        ({"source": {"key": "uploads/nothing/here.mp4"}}, "source_not_found", "uploads/nothing"),
        ({"source": {"key": "uploads/x/a.mp4"}, "formats": ["pdf"]}, "invalid_request", "pdf"),
        ({"source": {"key": "uploads/x/a.mp4"}, "language": "english"}, "invalid_request", "ISO"),
        ({"source": {"key": "uploads/x/a.mp4"}, "kind": "karaoke"}, "invalid_request", "subtitle"),
        ({"source": {"key": "uploads/x/a.mp4"}, "kind": 3}, "invalid_request", "transcribe"),
        (
            {"source": {"key": "uploads/x/a.mp4"}, "burn_subtitles": "yes"},
            "invalid_request",
            "true",
        ),
    ],
)
async def test_bad_job_requests_are_refused_with_a_reason(
    api: Stack, http: aiohttp.ClientSession, body: dict[str, Any], code: str, needle: str
) -> None:
    """Each malformed job request gets a 400 whose code and message say what is wrong."""
    async with http.post(f"{gw(api)}/v1/jobs", json=body) as r:
        message = await expect_error(r, 400, code)
    assert needle in message


async def test_malformed_bodies(api: Stack, http: aiohttp.ClientSession) -> None:
    """Broken JSON is a 400, an unknown content type a 415, an unknown path a JSON 404."""
    base = gw(api)
    headers = {"Content-Type": "application/json"}
    async with http.post(f"{base}/v1/jobs", data=b"{not json", headers=headers) as r:
        await expect_error(r, 400, "invalid_json")
    async with http.post(f"{base}/v1/jobs", data=b"[1, 2]", headers=headers) as r:
        await expect_error(r, 400, "invalid_json")
    async with http.post(f"{base}/v1/jobs", data=b"x", headers={"Content-Type": "text/plain"}) as r:
        await expect_error(r, 415, "unsupported_media_type")
    async with http.get(f"{base}/v1/nope") as r:
        await expect_error(r, 404, "not_found")
    async with http.get(f"{base}/v1/jobs/01m84sn4y6skg5d13wt97wbts0") as r:
        await expect_error(r, 404, "not_found")
    async with http.put(f"{base}/v1/jobs/x") as r:
        await expect_error(r, 405, "method_not_allowed")


async def test_upload_url_then_job(api: Stack, http: aiohttp.ClientSession) -> None:
    """A client PUTs to the upload URL, then creates a job from the key; the job is queued."""
    key = await upload(http, api, b"\0" * 1000, name="../../My Holiday (1).mp4")
    assert key.endswith("/source")  # vidstream names sources; the client's name is kept aside
    async with http.post(f"{gw(api)}/v1/jobs", json={"source": {"key": key}}) as r:
        job = await r.json()
        assert r.status == 202, job
        assert r.headers["Location"] == job["links"]["self"]
    assert job["status"] == "queued" and job["progress"] == 0.0 and job["stage"] is None
    assert job["kind"] == "subtitle"  # the default
    assert job["source"] == {"key": key, "name": "My Holiday (1).mp4"}
    assert job["options"] == {
        "language": "en",
        "burn_subtitles": True,
        "formats": ["json", "srt", "vtt"],
    }
    assert job["outputs"] == {} and job["error"] is None and job["attempts"] == 0
    assert api.notifier is not None
    assert job["links"]["ws"] == api.notifier.url
    async with http.get(job["links"]["self"]) as r:
        assert (await r.json())["id"] == job["id"]
    async with http.get(job["links"]["events"]) as r:
        events = (await r.json())["events"]
    assert [e["event"] for e in events] == ["queued"]


async def test_upload_links_are_signed_expiring_and_sized(
    api: Stack, http: aiohttp.ClientSession
) -> None:
    """A tampered, expired or overfilled upload link is refused and stores nothing."""
    body = {"filename": "a.mp4", "content_type": "video/mp4", "size": 10}
    async with http.post(f"{gw(api)}/v1/uploads", json=body) as r:
        ticket = await r.json()
    url = urlsplit(ticket["upload_url"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}

    def with_query(**changes: str) -> str:
        return urlunsplit(url._replace(query=urlencode({**query, **changes})))

    async with http.put(with_query(max_size="999999"), data=b"x" * 10) as r:
        await expect_error(r, 403, "invalid_signature")
    async with http.put(with_query(expires="1"), data=b"x" * 10) as r:
        await expect_error(r, 403, "invalid_signature")
    async with http.put(ticket["upload_url"], data=b"x" * 11) as r:
        await expect_error(r, 413, "too_large")
    async with http.post(f"{gw(api)}/v1/jobs", json={"source": {"key": ticket["key"]}}) as r:
        await expect_error(r, 400, "source_not_found")


async def test_uploads_beyond_the_limit(
    api: Stack, http: aiohttp.ClientSession, settings: Settings
) -> None:
    """Asking for, or streaming, more than MAX_UPLOAD_BYTES is a 413 and leaves no file."""
    body = {"filename": "big.mp4", "content_type": "video/mp4", "size": 200_001}
    async with http.post(f"{gw(api)}/v1/uploads", json=body) as r:
        await expect_error(r, 413, "too_large")
    form = aiohttp.FormData()
    form.add_field("file", b"x" * 200_001, filename="big.mp4", content_type="video/mp4")
    async with http.post(f"{gw(api)}/v1/jobs", data=form) as r:
        await expect_error(r, 413, "too_large")
    uploads = Path(settings.data_dir) / "storage" / "uploads"
    assert not uploads.exists() or not [p for p in uploads.rglob("*") if p.is_file()]


async def test_multipart_needs_a_file_and_valid_fields(
    api: Stack, http: aiohttp.ClientSession, settings: Settings
) -> None:
    """A form without a file, or with a bad option after the file, is a 400 and keeps nothing."""
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("language", "en")
    async with http.post(f"{gw(api)}/v1/jobs", data=form) as r:
        await expect_error(r, 400, "missing_file")
    form = aiohttp.FormData()
    form.add_field("file", b"x" * 100, filename="a.mp4", content_type="video/mp4")
    form.add_field("burn_subtitles", "perhaps")
    async with http.post(f"{gw(api)}/v1/jobs", data=form) as r:
        await expect_error(r, 400, "invalid_request")
    uploads = Path(settings.data_dir) / "storage" / "uploads"
    assert not uploads.exists() or not [p for p in uploads.rglob("*") if p.is_file()]


async def test_cancel_a_queued_job_once(api: Stack, http: aiohttp.ClientSession) -> None:
    """DELETE cancels a queued job with one `cancelled` event; a second DELETE is a 409."""
    key = await upload(http, api, b"\0" * 100)
    async with http.post(f"{gw(api)}/v1/jobs", json={"source": {"key": key}}) as r:
        job = await r.json()
    async with http.delete(job["links"]["self"]) as r:
        assert r.status == 200
        assert (await r.json())["status"] == "cancelled"
    async with http.delete(job["links"]["self"]) as r:
        assert "cancelled" in await expect_error(r, 409, "conflict")
    async with http.get(job["links"]["events"]) as r:
        events = (await r.json())["events"]
    assert [e["event"] for e in events] == ["queued", "cancelled"]


async def test_cors_lets_listed_browsers_call_the_api(
    api: Stack, http: aiohttp.ClientSession
) -> None:
    """A listed origin's preflight succeeds and responses, errors included, carry the CORS
    header; any other origin gets neither, and only the API's own headers are allowed."""
    headers = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    async with http.options(f"{gw(api)}/v1/jobs", headers=headers) as r:
        assert r.status == 204
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
        allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
        assert allowed == {
            "authorization", "content-type", "idempotency-key", "last-event-id", "x-request-id",
        }  # fmt: skip
    async with http.get(f"{gw(api)}/v1/nope", headers={"Origin": "https://app.example"}) as r:
        assert r.status == 404
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    evil = {**headers, "Origin": "https://evil.example"}
    async with http.options(f"{gw(api)}/v1/jobs", headers=evil) as r:
        await expect_error(r, 403, "forbidden_origin")
        assert "Access-Control-Allow-Origin" not in r.headers
    async with http.get(f"{gw(api)}/healthz", headers={"Origin": "https://evil.example"}) as r:
        assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers


async def test_garbage_signatures_and_ids_are_client_errors(
    api: Stack, http: aiohttp.ClientSession
) -> None:
    """A non-ASCII signature is a 403 and a malformed event id a 400, never a 5xx."""
    async with http.get(f"{gw(api)}/v1/objects/jobs/x/a.srt?expires=9999999999&sig=%C3%A9") as r:
        await expect_error(r, 403, "invalid_signature")
    key = await upload(http, api, b"\0" * 10)
    async with http.post(f"{gw(api)}/v1/jobs", json={"source": {"key": key}}) as r:
        job = await r.json()
    async with http.get(f"{job['links']['events']}?after=garbage") as r:
        await expect_error(r, 400, "invalid_request")
