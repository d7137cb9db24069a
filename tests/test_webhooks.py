"""Webhooks: signed, retried from Redis, delivered once per attempt, never aimed inward."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from tests.conftest import upload_job
from vidstream.core.errors import PermanentError
from vidstream.core.settings import Settings
from vidstream.job.model import Job, Options
from vidstream.job.protocol import Cancel
from vidstream.runtime import Stack
from vidstream.services import Services
from vidstream.webhooks.deliver import Result, WebhookDeliverer
from vidstream.webhooks.post import post
from vidstream.webhooks.signature import sign, verify, webhook_secret
from vidstream.webhooks.targets import TargetRefused, check_webhook_url, refusal, resolve

API_MD = Path(__file__).resolve().parent.parent / "docs" / "api.md"
SECRET = webhook_secret("test-secret", "default")  # conftest's SECRET_KEY, auth off


def documented(language: str) -> str:
    """The verification snippet in `language` from docs/api.md's Webhooks section."""
    section = API_MD.read_text().split("## Webhooks", 1)[1]
    match = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert match, f"docs/api.md has no {language} snippet under Webhooks"
    return match.group(1)


# -- the signature ---------------------------------------------------------------------------


def test_signature_round_trip() -> None:
    """A receiver holding the tenant's secret accepts what vidstream signed."""
    body = b'{"id": "01m8", "status": "completed"}'
    header = sign(SECRET, body)
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", header)
    assert verify(SECRET, body, header)


def test_tampered_or_old_signatures_fail() -> None:
    """A changed body, another secret, an old or garbled header: the receiver refuses each."""
    body = b'{"status": "completed"}'
    header = sign(SECRET, body)
    assert not verify(SECRET, b'{"status": "failed"}', header)
    assert not verify(webhook_secret("test-secret", "other"), body, header)
    old = sign(SECRET, body, timestamp=int(time.time()) - 600)
    assert not verify(SECRET, body, old)
    assert verify(SECRET, body, old, tolerance_s=900)
    for garbled in ("", "t=x,v1=00", "v1=" + header.split("v1=")[1], "t=1,v1=é"):
        assert not verify(SECRET, body, garbled)


def test_webhook_secret_is_derived_per_tenant() -> None:
    """Every gateway derives the same secret for a tenant; tenants and keys each get their own."""
    assert webhook_secret("k", "acme") == webhook_secret("k", "acme")
    assert (
        len({webhook_secret("k", "acme"), webhook_secret("k", "b"), webhook_secret("j", "acme")})
        == 3
    )
    assert re.fullmatch(r"[0-9a-f]{64}", webhook_secret("k", "acme"))


def test_documented_snippets_check_a_signature() -> None:
    """The Python and Node snippets in docs/api.md accept a good signature, refuse a bad one."""
    namespace: dict[str, Any] = {}
    exec(documented("python"), namespace)
    body = b'{"id": "x"}'
    assert namespace["verify_webhook"](SECRET, body, sign(SECRET, body))
    assert not namespace["verify_webhook"](SECRET, body + b" ", sign(SECRET, body))
    node = shutil.which("node")
    if node is None:
        return
    driver = documented("javascript") + (
        "\nconst [secret, body, header] = process.argv.slice(1);"
        "\nprocess.stdout.write(String(verifyWebhook(secret, Buffer.from(body), header)));"
    )
    for signed, expected in ((body, "true"), (b'{"id": "y"}', "false")):
        run = subprocess.run(
            [node, "-e", driver, SECRET, body.decode(), sign(SECRET, signed)],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        assert run.stdout == expected, run.stderr


# -- where webhooks may go -------------------------------------------------------------------

REFUSED = [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fc00::1",
    "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "2002:7f00:0001::1", "64:ff9b::7f00:1",
    "64:ff9b::a00:1", "2001:0:4136:e378:8000:63bf:80ff:fffe", "::7f00:1", "198.18.0.1",
    "fec0::1", "3fff::1", "3fff:fff::1", "64:ff9b:1::1", "100:0:0:1::1", "5f00::1",
    "192.0.0.8", "192.0.0.255", "192.88.99.1", "::ffff:192.0.0.8",
]  # fmt: skip


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address: str) -> None:
    """No webhook goes to a non-public or special-purpose address (fec0::/10, 3fff::/20...),
    nor to one inside IPv6 (mapped, 6to4, NAT64)."""
    assert refusal(ip_address(address)) is not None
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(PermanentError) as err:
        check_webhook_url(f"https://{host}:8443/hook")
    assert err.value.code == "invalid_webhook_url"
    assert check_webhook_url(f"http://{host}/hook", allow_private=True) == f"http://{host}/hook"


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "2606:4700::1111", "::ffff:93.184.216.34", "64:ff9b::5db8:d822"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    """Public IPv4 and IPv6 addresses (NAT64 of a public one included) may receive webhooks."""
    assert refusal(ip_address(address)) is None
    host = f"[{address}]" if ":" in address else address
    assert check_webhook_url(f"https://{host}/hook") == f"https://{host}/hook"


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("ftp://example.com/hook", "http or https"),
        ("example.com/hook", "http or https"),
        ("https:///hook", "host"),
        ("https://user:pw@example.com/hook", "user name"),
        ("https://example.com/" + "a" * 2048, "2048"),
        ("https://example.com/a b", "spaces"),
        ("https://example.com/\r\nX-Evil: 1", "control"),
        ("https://example.com:99999/hook", "port"),
        ("http://example.com:" + "9" * 1800 + "/hook", "port"),
        ("http://[" + "f" * 1000 + "]/hook", "host"),
        ("http://2130706433/hook", "loopback"),  # 127.0.0.1 written as one number
        ("http://0x7f.1/hook", "loopback"),
        ("http://[fe80::1%25eth0]/hook", "link-local"),
    ],
)
def test_malformed_webhook_urls_are_refused(url: str, needle: str) -> None:
    """A webhook_url that is not a plain public http(s) URL is refused, saying why."""
    with pytest.raises(PermanentError, match=needle) as err:
        check_webhook_url(url)
    assert err.value.code == "invalid_webhook_url"
    assert len(err.value.message) < 300, "the client's value is not echoed back at length"


async def test_a_name_resolving_to_loopback_is_refused() -> None:
    """A host name is refused when it resolves to a non-public address ("localhost")."""
    with pytest.raises(TargetRefused, match="loopback"):
        await resolve("localhost", 80, allow_private=False, timeout_s=5)
    found = await resolve("localhost", 80, allow_private=True, timeout_s=5)
    assert "127.0.0.1" in {a.host for a in found}


# -- delivery, end to end ----------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A webhook endpoint on 127.0.0.1, port 0, answering `statuses` in turn (then 200). A 3xx
    points (`Location`) at a second route of the same server, which records every request."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[Received] = []
        self.redirected: list[str] = []  # requests that reached the second route
        self.arrived: asyncio.Queue[Received] = asyncio.Queue()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        received = Received(dict(request.headers), await request.read())
        self.requests.append(received)
        self.arrived.put_nowait(received)
        status = self.statuses.pop(0) if self.statuses else 200
        if 300 <= status < 400:
            return web.Response(status=status, headers={"Location": "/elsewhere"})
        return web.Response(status=status)

    async def elsewhere(self, request: web.Request) -> web.Response:
        self.redirected.append(request.method)
        return web.Response(status=200)

    async def next(self, timeout_s: float = 15.0) -> Received:
        async with asyncio.timeout(timeout_s):
            return await self.arrived.get()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver([])
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    app.router.add_route("*", "/elsewhere", hook.elsewhere)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    # A name, not 127.0.0.1: the check at job creation refuses a non-public IP literal.
    hook.url = f"http://localhost:{runner.addresses[0][1]}/hook"
    yield hook
    await runner.cleanup()


def gw(stack: Stack) -> str:
    assert stack.gateway is not None
    return stack.gateway.url


def services_of(stack: Stack) -> Services:
    assert stack.services is not None
    return stack.services


async def cancelled_job(http: aiohttp.ClientSession, stack: Stack, tmp: Path, url: str) -> str:
    """Upload a tiny file as a job with `url` as its webhook, then cancel it; return its id."""
    source = tmp / "clip.mp4"
    source.write_bytes(b"not really a video")
    job = await upload_job(http, gw(stack), source, webhook_url=url)
    async with http.delete(f"{gw(stack)}/v1/jobs/{job['id']}") as r:
        assert r.status == 200, await r.text()
    return str(job["id"])


async def settled(redis: Redis, services: Services) -> tuple[int, int]:
    """(entries pending in the deliverers' group, retries waiting)."""
    keys = services.keys
    pending = await redis.xpending(keys.webhooks, keys.webhook_group)
    return int(pending["pending"]), int(await redis.zcard(keys.webhook_retries))


async def test_a_job_end_is_posted_once_signed(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession,
    receiver: Receiver, tmp_path: Path,
) -> None:  # fmt: skip
    """A cancelled job's webhook arrives once, as the job object, signed as documented."""
    namespace: dict[str, Any] = {}
    exec(documented("python"), namespace)
    stack = Stack(make_settings(webhook_allow_private=True), ("gateway", "notifier"))
    async with stack:
        job_id = await cancelled_job(http, stack, tmp_path, receiver.url)
        got = await receiver.next()
        async with http.get(f"{gw(stack)}/v1/jobs/{job_id}") as r:
            shown = await r.json()
    # Closed: the deliverer finished its attempt, and nothing more is on its way.
    assert len(receiver.requests) == 1
    assert await settled(redis, services_of(stack)) == (0, 0)
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["Vidstream-Event"] == "cancelled"
    assert re.fullmatch(r"\d+-\d+", got.headers["Vidstream-Delivery"])
    assert namespace["verify_webhook"](SECRET, got.body, got.headers["Vidstream-Signature"])
    body = json.loads(got.body)
    assert body["id"] == job_id and body["status"] == "cancelled"
    assert body == {key: shown[key] for key in body}  # the job as GET /v1/jobs/{id} shows it


async def test_a_failed_delivery_is_retried_then_acknowledged(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession,
    receiver: Receiver, tmp_path: Path,
) -> None:  # fmt: skip
    """A receiver that answers 500, then 302 to another route, gets the same delivery again
    (the redirect is not followed) until it says 200."""
    receiver.statuses = [500, 302]
    settings = make_settings(webhook_allow_private=True, webhook_retry_base_s=0.1)
    stack = Stack(settings, ("gateway", "notifier"))
    async with stack:
        await cancelled_job(http, stack, tmp_path, receiver.url)
        attempts = [await receiver.next() for _ in range(3)]
    assert len(receiver.requests) == 3
    assert receiver.redirected == []
    assert await settled(redis, services_of(stack)) == (0, 0)
    assert len({a.headers["Vidstream-Delivery"] for a in attempts}) == 1
    assert len({a.body for a in attempts}) == 1
    for attempt in attempts:
        assert verify(SECRET, attempt.body, attempt.headers["Vidstream-Signature"])


async def test_a_restarted_deliverer_still_delivers(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession,
    receiver: Receiver, tmp_path: Path,
) -> None:  # fmt: skip
    """A retry scheduled before the gateway restarts is delivered by the restarted one."""
    receiver.statuses = [503]
    # The first retry is due 1 to 3 s later: long after this stack has closed.
    settings = make_settings(webhook_allow_private=True, webhook_retry_base_s=2.0)
    async with Stack(settings, ("gateway", "notifier")) as first:
        await cancelled_job(http, first, tmp_path, receiver.url)
        failed = await receiver.next()
    assert len(receiver.requests) == 1
    assert await settled(redis, services_of(first)) == (0, 1)  # the retry waits in Redis
    async with Stack(settings, ("gateway", "notifier")) as second:
        retried = await receiver.next()
    assert retried.headers["Vidstream-Delivery"] == failed.headers["Vidstream-Delivery"]
    assert retried.body == failed.body
    assert await settled(redis, services_of(second)) == (0, 0)


async def test_a_dead_deliverers_attempt_is_reclaimed(
    make_settings: Callable[..., Settings], redis: Redis, receiver: Receiver
) -> None:
    """An attempt a deliverer took and never finished (it died) is made by another one."""
    async with Stack(make_settings(webhook_allow_private=True), ()) as stack:
        services = services_of(stack)
        dead = WebhookDeliverer(services)
        await dead.queue.ensure_group()
        job = Job.new("uploads/x/clip.mp4", Options(), webhook_url=receiver.url)
        await services.jobs.create(job)
        assert (await services.jobs.apply(job.id, Cancel())).ok
        taken = await dead.queue.next()  # ...and the process dies before the attempt
        assert taken is not None and taken.job_id == job.id
        async with WebhookDeliverer(services, claim_idle_s=0):
            got = await receiver.next()
        await dead.queue.consumer.close()  # what the dead process's exit did to its connection
    assert got.headers["Vidstream-Delivery"] == taken.delivery_id
    assert await settled(redis, services) == (0, 0)


async def test_a_private_webhook_url_is_refused_at_creation(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:  # fmt: skip
    """POST /v1/jobs with a webhook_url at a loopback address answers 400 invalid_webhook_url."""
    async with Stack(make_settings(), ("gateway", "notifier")) as stack:
        form = aiohttp.FormData()
        form.add_field("webhook_url", "http://127.0.0.1:9/hook")
        form.add_field("file", b"not really a video", filename="clip.mp4")
        async with http.post(f"{gw(stack)}/v1/jobs", data=form) as r:
            body = await r.json()
        assert r.status == 400 and body["error"]["code"] == "invalid_webhook_url", body


async def test_a_name_resolving_inward_is_refused_at_delivery(
    make_settings: Callable[..., Settings], redis: Redis, receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A webhook_url whose host resolves to loopback is never called, and the log says so."""
    async with Stack(make_settings(), ()) as stack:
        services = services_of(stack)
        job = Job.new("uploads/x/clip.mp4", Options(), webhook_url=receiver.url)
        await services.jobs.create(job)
        assert (await services.jobs.apply(job.id, Cancel())).ok
        deliverer = WebhookDeliverer(services)
        assert await deliverer.step() is Result.REFUSED
        await deliverer.close()
        assert await settled(redis, services) == (0, 0)
    assert receiver.requests == []
    assert "webhook_refused" in capsys.readouterr().err


async def test_a_delivery_is_given_up_after_the_max_age(
    make_settings: Callable[..., Settings], redis: Redis, receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A receiver that keeps failing past WEBHOOK_MAX_AGE_S is given up on, and the log says so."""
    receiver.statuses = [500]
    settings = make_settings(webhook_allow_private=True, webhook_max_age_s=0)
    async with Stack(settings, ()) as stack:
        services = services_of(stack)
        job = Job.new("uploads/x/clip.mp4", Options(), webhook_url=receiver.url)
        await services.jobs.create(job)
        assert (await services.jobs.apply(job.id, Cancel())).ok
        deliverer = WebhookDeliverer(services)
        assert await deliverer.step() is Result.GAVE_UP
        await deliverer.close()
        assert await settled(redis, services) == (0, 0)
    assert len(receiver.requests) == 1
    assert "webhook_gave_up" in capsys.readouterr().err


async def test_the_target_is_looked_up_once_per_attempt(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection goes to the address checked: no second DNS lookup to rebind."""
    loop = asyncio.get_running_loop()
    lookups: list[str] = []
    real = loop.getaddrinfo

    async def counting(host: Any, *args: Any, **kwargs: Any) -> Any:
        lookups.append(str(host))
        return await real(host, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", counting)
    answer = await post(receiver.url, b"{}", {}, allow_private=True, timeout_s=10)
    assert answer.ok and lookups == ["localhost"]
    assert len(receiver.requests) == 1


async def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    """A 302 with a Location is an unacknowledged attempt: the place it points at is never hit."""
    receiver.statuses = [302]
    answer = await post(receiver.url, b"{}", {}, allow_private=True, timeout_s=10)
    assert (answer.status, answer.ok, answer.location) == (302, False, "/elsewhere")
    assert len(receiver.requests) == 1 and receiver.redirected == []
    async with (
        aiohttp.ClientSession() as http,
        http.get(receiver.url.replace("hook", "elsewhere")) as r,
    ):
        assert r.status == 200 and receiver.redirected == ["GET"]  # the route is there to hit
