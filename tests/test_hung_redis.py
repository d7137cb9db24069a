"""A Redis that accepts connections and answers nothing (SIGSTOP): the API still answers, 503
`unavailable` within REDIS_REQUEST_TIMEOUT_S, and /readyz within a second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.faults import OwnRedis
from tests.faults import own_redis as own_redis
from tests.test_gateway import gw, upload
from vidstream.core.settings import Settings
from vidstream.http.limits import lift_budget, redis_budget_middleware
from vidstream.runtime import Stack
from vidstream.state.budget import BudgetedRedis, lift, redis_budget

# The bounds asserted: REDIS_REQUEST_TIMEOUT_S (2 s) and /readyz's second, with margin for a
# loaded machine. Before the budget these took 25 s, over 60 s and 5 s.
REQUEST_BOUND_S = 4.0
READY_BOUND_S = 2.0


async def timed(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[float, int, Any]:
    started = time.monotonic()
    async with http.request(method, url, timeout=aiohttp.ClientTimeout(total=15), **kwargs) as r:
        body = await r.json()
    return time.monotonic() - started, r.status, body


async def test_a_frozen_redis_gets_answers_within_a_bound(
    make_settings: Callable[..., Settings], own_redis: OwnRedis, http: aiohttp.ClientSession
) -> None:
    """With Redis frozen, creating a job (with and without Idempotency-Key), reading one and
    listing its events answer 503 `unavailable` in about 2 s, /readyz 503 within a second; once
    Redis is back the API works again."""
    settings = make_settings(redis_url=own_redis.url)  # REDIS_TIMEOUT_S at its default, 5 s
    async with Stack(settings, ("gateway",)) as stack:
        base = gw(stack)
        keys = [await upload(http, stack, b"\0" * 100) for _ in range(3)]
        async with http.post(f"{base}/v1/jobs", json={"source": {"key": keys[0]}}) as r:
            assert r.status == 202
            job = await r.json()
        jobs, again = f"{base}/v1/jobs", {"Idempotency-Key": "frozen-1"}
        own_redis.freeze()
        try:
            *api, ready = await asyncio.gather(
                timed(http, "POST", jobs, json={"source": {"key": keys[1]}}),
                timed(http, "POST", jobs, json={"source": {"key": keys[2]}}, headers=again),
                timed(http, "GET", job["links"]["self"]),
                timed(http, "GET", job["links"]["events"]),
                timed(http, "GET", f"{base}/readyz"),
            )
        finally:
            own_redis.thaw()
        for took, status, body in api:
            assert status == 503 and body["error"]["code"] == "unavailable", body
            assert took < REQUEST_BOUND_S, f"answered after {took:.1f} s"
        took, status, body = ready
        assert status == 503 and body["checks"]["redis"] == "unavailable", body
        assert took < READY_BOUND_S, f"/readyz answered after {took:.1f} s"
        async with http.get(job["links"]["self"]) as r:  # Redis is back, and so is the API
            assert r.status == 200


async def test_the_budget_counts_time_in_redis_only(own_redis: OwnRedis) -> None:
    """Time between commands is not spent; commands past the budget fail at once, until the
    budget is lifted."""
    from redis.exceptions import TimeoutError as RedisTimeoutError

    client = BudgetedRedis.from_url(own_redis.url)
    try:
        with redis_budget(0.5) as budget:
            await client.ping()
            await asyncio.sleep(0.6)  # a client sending its upload: not Redis time
            await client.ping()
            assert budget.left > 0.3
            own_redis.freeze()
            started = time.monotonic()
            with pytest.raises(RedisTimeoutError):
                await client.ping()
            assert time.monotonic() - started < 1.0
            started = time.monotonic()
            with pytest.raises(RedisTimeoutError):
                await client.pipeline().ping().ping().execute()
            assert time.monotonic() - started < 0.1  # spent: no wait at all
            own_redis.thaw()
            lift()  # an answer has started: per-command timeouts only, from here
            assert await client.ping()
    finally:
        own_redis.thaw()
        await client.aclose()


async def test_tasks_a_request_starts_do_not_spend_its_budget(own_redis: OwnRedis) -> None:
    """A task the request starts (a keep-alive renewing its upload's reservation) is bounded by
    the budget left, but spends none of it: the request keeps its time for its own commands."""
    from redis.exceptions import TimeoutError as RedisTimeoutError

    client = BudgetedRedis.from_url(own_redis.url)
    try:
        with redis_budget(0.5) as budget:
            own_redis.freeze()  # for 0.3 s
            asyncio.get_running_loop().call_later(0.3, own_redis.thaw)
            assert await asyncio.create_task(client.ping())
            assert budget.left is not None and budget.left > 0.45
            own_redis.freeze()
            started = time.monotonic()
            with pytest.raises(RedisTimeoutError):
                await asyncio.create_task(client.ping())
            assert 0.4 < time.monotonic() - started < 1.0  # what was left, 0.5 s
    finally:
        own_redis.thaw()
        await client.aclose()


async def test_a_started_answer_is_not_cut_by_the_budget(own_redis: OwnRedis) -> None:
    """Once a response has started (an event stream catching a subscriber up), its Redis reads
    are not held to the request's budget: a slow one delays the stream, it does not break it."""
    client = BudgetedRedis.from_url(own_redis.url)

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        own_redis.freeze()  # for 0.3 s, past the 0.1 s budget
        asyncio.get_running_loop().call_later(0.3, own_redis.thaw)
        await client.ping()
        await response.write(b"caught up")
        return response

    app = web.Application(middlewares=[redis_budget_middleware(0.1)])
    app.on_response_prepare.append(lift_budget)  # as the gateway's create_app does
    app.router.add_get("/stream", stream)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/stream"
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            assert await r.read() == b"caught up"
    finally:
        await runner.cleanup()
        await client.aclose()
