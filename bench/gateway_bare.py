#!/usr/bin/env python3
"""The floor of bench/gateway.py: a bare aiohttp `POST /v1/jobs` doing the writes a job needs.

    python bench/gateway_bare.py --port PORT --redis-url URL --prefix PREFIX

One process on uvloop (as `vidstream gateway`), access log off, the same redis-py client set-up
as vidstream's (`services.connect_redis`: a blocking pool of up to 500 connections, replies
decoded). For each request it reads the JSON body, takes `source.key` (a string, else 400), makes
a job id of vidstream's shape, and writes, in one MULTI/EXEC round trip:

  HSET  PREFIX:bare:job:{ID}  the 21 fields of a new vidstream job hash (same names, values of
                              the same sizes: about 460 bytes)
  XADD  PREFIX:bare:stream    job_id ID gen 1 (the entry `vidstream` puts on the first stage's
                              stream)

and answers 202 with a JSON job of the same size as vidstream's answer (about 800 bytes) and a
Location header. No middleware, no checks beyond the body's shape, no ticket, no storage: nothing
less can create a job that a worker could find. Every key it writes is under PREFIX:bare:, and
the harness deletes them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import time

import uvloop
from aiohttp import web
from redis.asyncio import BlockingConnectionPool, Redis

OPTIONS = json.dumps({"language": "en", "burn_subtitles": True, "formats": ["json", "srt", "vtt"]})
ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, as vidstream's job ids


def job_id() -> str:
    """26 characters, time-ordered: the shape of `vidstream.job.model.new_job_id`."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))


def isoformat(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def make_app(redis: Redis, prefix: str, base: str) -> web.Application:
    stream = f"{prefix}:bare:stream"

    async def create_job(request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
            key = body["source"]["key"]
            if not isinstance(key, str):
                raise TypeError(key)
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": {"code": "invalid_request"}}, status=400)
        jid, now = job_id(), time.time()
        rid = secrets.token_hex(12)
        fields = {
            "id": jid, "tenant": "default", "kind": "subtitle", "source": key,
            "options": OPTIONS, "status": "queued", "stage": "", "progress": "0.0",
            "created_at": repr(now), "updated_at": repr(now), "outputs": "{}", "error": "",
            "attempts": "0", "media": "", "webhook_url": "", "source_name": "source.mp4",
            "request_id": rid, "priority": "normal", "timeline": "", "assets": "", "gen": "1",
        }  # fmt: skip
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hset(f"{prefix}:bare:job:{{{jid}}}", mapping=fields)
            pipe.xadd(stream, {"job_id": jid, "gen": "1"})
            await pipe.execute()
        at = isoformat(now)
        link = f"{base}/v1/jobs/{jid}"
        answer = {
            "id": jid, "tenant": "default", "kind": "subtitle", "priority": "normal",
            "stages": ["transcribe", "render"], "request_id": rid, "status": "queued",
            "stage": None, "progress": 0.0, "created_at": at, "updated_at": at,
            "source": {"key": key, "name": "source.mp4"}, "options": json.loads(OPTIONS),
            "media": None, "outputs": {}, "error": None, "attempts": 0,
            "ws_token": f"{int(now) + 86400}.{secrets.token_urlsafe(24)}",
            "links": {"self": link, "events": f"{link}/events", "ws": "ws://127.0.0.1:8765/v1/ws"},
        }  # fmt: skip
        return web.json_response(answer, status=202, headers={"Location": link})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/v1/jobs", create_job)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(port: int, redis_url: str, prefix: str) -> None:
    pool = BlockingConnectionPool.from_url(
        redis_url, max_connections=500, timeout=5.0, decode_responses=True,
        socket_connect_timeout=5.0, socket_timeout=6.0, health_check_interval=30,
    )  # fmt: skip
    redis = Redis.from_pool(pool)
    await redis.ping()
    runner = web.AppRunner(
        make_app(redis, prefix, f"http://127.0.0.1:{port}"), access_log=None, shutdown_timeout=5
    )
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Future()  # until the harness terminates the process
    finally:
        await runner.cleanup()
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.port, args.redis_url, args.prefix))


if __name__ == "__main__":
    main()
