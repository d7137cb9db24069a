"""`GET /v1/jobs/{id}/events` with `Accept: text/event-stream`: the WebSocket's events as
Server-Sent Events, for clients without WebSocket.

The same subscription as the notifier's (`feed.hub`, one per gateway process): a `snapshot`
(or `reset`) event first, then every event with `id:` set to its event id, so `EventSource`
resumes by itself with `Last-Event-ID` after a drop. The permission is the same too: the API key,
or (since `EventSource` cannot send headers) the job's `ws_token` as `?token=` (a key is taken
there too, but a URL ends up in logs: the docs advise the token). `http.auth` counts refused
tokens per address. A comment line every `KEEPALIVE_S` keeps proxies from closing an idle
stream.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from vidstream.feed import access, resume
from vidstream.http.auth import job_or_404
from vidstream.http.errors import ApiError
from vidstream.http.state import HUB, SERVICES
from vidstream.job.model import Job, is_job_id
from vidstream.state.bus import is_stream_id

KEEPALIVE_S = 15.0
BACKLOG = 2000  # events waiting for a slow client before its stream is ended (it resumes)


class SseSink:
    """Events for one SSE response, queued as ready-to-write frames."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[str] = asyncio.Queue(BACKLOG)
        self.overflowed = False
        self.ended = asyncio.Event()

    def end(self) -> None:
        self.ended.set()

    def send(self, text: str, event_id: str | None = None, name: str | None = None) -> None:
        if self.overflowed:
            return
        frame = _frame(text, event_id, name)
        try:
            self.frames.put_nowait(frame)
        except asyncio.QueueFull:
            self.overflowed = True


def _frame(text: str, event_id: str | None = None, name: str | None = None) -> str:
    # A reset carries the snapshot's last event id: EventSource resumes from there, not from
    # an event the reset took back.
    head = (f"event: {name}\n" if name else "") + (f"id: {event_id}\n" if event_id else "")
    return f"{head}data: {text}\n\n"


STREAMS: web.AppKey[set[SseSink]] = web.AppKey("sse_streams")  # the open event streams


async def _next_frame(sink: SseSink) -> str:
    """The next frame, or "" after KEEPALIVE_S (or when the stream is ended) with none."""
    getting = asyncio.ensure_future(sink.frames.get())
    ending = asyncio.ensure_future(sink.ended.wait())
    done, _ = await asyncio.wait({getting, ending}, timeout=KEEPALIVE_S,
                                 return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
    ending.cancel()
    if getting in done:
        return getting.result()
    getting.cancel()
    return ""


def end_all(app: web.Application) -> None:
    """End every open event stream (the gateway is stopping)."""
    streams: set[SseSink] = app[STREAMS]
    for sink in list(streams):
        sink.end()


def wants_stream(request: web.Request) -> bool:
    return "text/event-stream" in request.headers.get("Accept", "")


async def events_job(request: web.Request) -> Job:
    """The job whose events are asked for: the caller's (API key), or the one `?token=` opens
    (the same check as the WebSocket's); 404 otherwise."""
    token = request.query.get("token")
    if token is None:
        return await job_or_404(request)
    services, job_id = request.app[SERVICES], request.match_info["job_id"]
    job = await services.jobs.get(job_id) if is_job_id(job_id) else None
    if job is None or not access.grants(services, token, job):
        raise ApiError(404, "not_found", "No such job, or the token does not open it.")
    return job


async def stream(request: web.Request) -> web.StreamResponse:
    """The job's events as Server-Sent Events, until its end."""
    hub = request.app[HUB]
    asked = await events_job(request)
    after = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    if after is not None and not is_stream_id(after):
        raise ApiError(400, "invalid_request", "Last-Event-ID must be an event id such as '0-0'")
    job, last_id = await hub.feed.snapshot(asked.id)
    if job is None:
        raise ApiError(404, "not_found", "No such job.")
    begin = await resume.start(hub.feed, job, last_id, after)
    seen_all = job.status.terminal and begin.after == begin.last_id
    if seen_all and after is not None and not begin.reset:
        # 204 is what tells EventSource to stop reconnecting (the HTML standard's rule).
        return web.Response(status=204)
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",  # nginx: pass each event on at once
    })  # fmt: skip
    await response.prepare(request)
    if after is None or begin.reset:
        kind = "reset" if begin.reset else "snapshot"
        snapshot = resume.message(kind, await hub.present(job), begin.last_id)
        event_id = begin.last_id if begin.reset else None
        await response.write(_frame(snapshot, event_id, kind).encode())
    if seen_all:
        return response  # ended, and the snapshot was everything
    sink = SseSink()
    streams = request.app[STREAMS]
    streams.add(sink)
    try:
        await hub.subscribe(sink, job.id, begin.after)
        while not sink.overflowed and not sink.ended.is_set():
            frame = await _next_frame(sink)
            await response.write(frame.encode() if frame else b": keep-alive\n\n")
            if sink.frames.empty() and not hub.subscribed(sink, job.id):
                break  # its terminal event was the last one
    except ConnectionError:  # the client went away: nothing is wrong here
        return response
    finally:
        streams.discard(sink)
        hub.drop(sink)
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response
