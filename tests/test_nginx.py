"""Behind the documented nginx (deploy/nginx/vidstream.conf, run by the test on free ports with a
throwaway certificate): with TRUSTED_PROXIES set, per-address limits count each client, not the
proxy, so one abusive client locks out nobody else."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import shutil
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import free_port
from tests.test_deploy import NGINX, TEMP_PATHS
from vidstream.core.settings import Settings
from vidstream.runtime import Stack

A_KEY = "vs_aaaa0000_key-of-tenant-a-for-the-nginx-tests"
BINARY = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
pytestmark = pytest.mark.skipif(
    BINARY is None or shutil.which("openssl") is None,
    reason="nginx or openssl is not installed (deploy/install-system-deps.sh installs both)",
)
# Clients on different loopback addresses: nginx sees each as its own client.
CLIENT_X, CLIENT_Y = "127.0.0.2", "127.0.0.3"
NO_VERIFY = ssl.create_default_context()
NO_VERIFY.check_hostname, NO_VERIFY.verify_mode = False, ssl.CERT_NONE


async def site(gateway_port: int, notifier_port: int, port: int, tmp: Path) -> str:
    """The documented site, pointed at this test's servers and files, listening on `port`."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    openssl = await asyncio.create_subprocess_exec(
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-subj", "/CN=localhost", "-days", "1", "-keyout", str(key), "-out", str(cert),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        _, err = await openssl.communicate()
    assert openssl.returncode == 0, err.decode()
    text = NGINX.read_text()
    text = re.sub(r"/etc/letsencrypt/live/[^;]*/fullchain\.pem", str(cert), text)
    text = re.sub(r"/etc/letsencrypt/live/[^;]*/privkey\.pem", str(key), text)
    text = text.replace("/var/log/nginx/", f"{tmp}/")
    text = text.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{gateway_port};")
    text = text.replace("server 127.0.0.1:8765;", f"server 127.0.0.1:{notifier_port};")
    text = re.sub(r"\n\s*server 127\.0\.0\.1:8766;[^\n]*", "", text)  # one notifier here
    text = text.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{port} ssl http2;")
    text = text.replace("listen 80;", f"listen 127.0.0.1:{free_port()};")
    text = re.sub(r"\n\s*listen \[::\]:\d+[^;]*;", "", text)
    assert f":{gateway_port};" in text and f":{port} ssl" in text, "the site changed shape"
    return text


@contextlib.asynccontextmanager
async def running_nginx(gateway_port: int, notifier_port: int, tmp: Path) -> AsyncIterator[str]:
    """nginx in the foreground with the site; yields its https base URL."""
    assert BINARY is not None
    port = free_port()
    (tmp / "site.conf").write_text(await site(gateway_port, notifier_port, port, tmp))
    temp = " ".join(f"{kind}_temp_path {tmp}/{kind};" for kind in TEMP_PATHS)
    user = pwd.getpwuid(os.geteuid()).pw_name  # workers as this user: they read the temp dir
    (tmp / "nginx.conf").write_text(
        f"daemon off; user {user}; pid {tmp}/nginx.pid; error_log {tmp}/error.log;\n"
        f"events {{}}\nhttp {{ access_log off; {temp} include {tmp}/site.conf; }}\n"
    )
    proc = await asyncio.create_subprocess_exec(
        BINARY, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "error.log"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(10):  # until it listens (or exits, saying why)
            while proc.returncode is None:
                with contextlib.suppress(OSError):
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                await asyncio.sleep(0.05)  # polling a port: nothing to wait on instead
        assert proc.returncode is None, (tmp / "error.log").read_text()
        yield f"https://127.0.0.1:{port}"
    finally:
        if proc.returncode is None:
            proc.terminate()
        async with asyncio.timeout(10):
            await proc.communicate()


@pytest.fixture
async def behind_nginx(
    make_settings: Callable[..., Settings], redis: Redis, tmp_path: Path
) -> AsyncIterator[tuple[Stack, str]]:
    """Gateway and notifier trusting nginx on loopback, with small per-address limits."""
    settings = make_settings(
        auth="on", api_keys=f"a:{A_KEY}", rate_limit_per_min=3, ws_max_connections_per_ip=2,
        gateway_max_connections_per_ip=2, trusted_proxies=("127.0.0.1", "::1"),
    )  # fmt: skip
    async with Stack(settings, ("gateway", "notifier")) as stack:
        assert stack.gateway is not None and stack.notifier is not None
        front = tmp_path / "nginx"
        front.mkdir()
        async with running_nginx(stack.gateway.port, stack.notifier.port, front) as url:
            yield stack, url


def client(address: str) -> aiohttp.ClientSession:
    """A client on its own loopback address, trusting nginx's throwaway certificate."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0), ssl=False)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))


async def new_job(http: aiohttp.ClientSession, url: str) -> Any:
    auth = {"Authorization": f"Bearer {A_KEY}"}
    body = {"filename": "talk.mp4", "content_type": "video/mp4", "size": 10}
    async with http.post(f"{url}/v1/uploads", json=body, headers=auth) as r:
        ticket = await r.json()
    async with http.put(ticket["upload_url"], data=b"\0" * 10, headers=ticket["headers"]) as r:
        assert r.status == 200, await r.text()
    async with http.post(f"{url}/v1/jobs", json={"source": {"key": ticket["key"]}},
                         headers=auth) as r:  # fmt: skip
        assert r.status == 202, await r.text()
        return await r.json()


async def test_token_guesses_count_per_client_behind_nginx(
    behind_nginx: tuple[Stack, str],
) -> None:
    """One client guessing `?token=`s through nginx is throttled (429), even when it forges
    X-Forwarded-For; another client's good token still opens its events."""
    _, url = behind_nginx
    async with client(CLIENT_X) as x, client(CLIENT_Y) as y:
        job = await new_job(y, url)
        events = f"{url}/v1/jobs/{job['id']}/events"
        for attempt in range(3):
            async with x.get(f"{events}?token=guess{attempt}") as r:
                assert r.status == 404, await r.text()
        for forged in ("", CLIENT_Y, "198.51.100.7"):
            headers = {"X-Forwarded-For": forged} if forged else {}
            async with x.get(f"{events}?token=guess", headers=headers) as r:
                assert r.status == 429, await r.text()
        async with y.get(f"{events}?token={job['ws_token']}") as r:
            assert r.status == 200, await r.text()


async def test_websockets_count_per_client_behind_nginx(behind_nginx: tuple[Stack, str]) -> None:
    """Past WS_MAX_CONNECTIONS_PER_IP WebSockets through nginx a client is refused (429);
    another client connects as usual."""
    _, url = behind_nginx
    ws_url = url.replace("https://", "wss://") + "/v1/ws"

    def ws(address: str) -> Any:
        return connect(ws_url, ssl=NO_VERIFY, local_addr=(address, 0), open_timeout=10)

    async with ws(CLIENT_X), ws(CLIENT_X):
        with pytest.raises(InvalidStatus) as refused:
            async with ws(CLIENT_X):
                pass
        assert refused.value.response.status_code == 429
        async with ws(CLIENT_Y) as other:
            await other.send('{"type": "ping"}')
            assert await other.recv() == '{"type": "pong"}'


async def test_the_proxy_is_not_capped_as_one_address(behind_nginx: tuple[Stack, str]) -> None:
    """nginx's many connections to the gateway are not held to GATEWAY_MAX_CONNECTIONS_PER_IP
    (2 here): requests of several clients at once all get through."""
    _, url = behind_nginx
    async with client(CLIENT_X) as x:
        job = await new_job(x, url)
        stream = f"{url}/v1/jobs/{job['id']}/events?token={job['ws_token']}"
        accept = {"Accept": "text/event-stream"}
        # Event streams hold their upstream connection open: four at once from four clients.
        sessions = [client(f"127.0.0.{n}") for n in range(4, 8)]
        try:
            opened = [await s.get(stream, headers=accept) for s in sessions]
            assert [r.status for r in opened] == [200] * 4
            async with x.get(f"{url}/healthz") as r:
                assert r.status == 200
            for r in opened:
                r.close()
        finally:
            for s in sessions:
                await s.close()
