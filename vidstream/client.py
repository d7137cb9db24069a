"""`vidstream submit`: upload a video, create a job, and follow it live over the WebSocket."""

from __future__ import annotations

import asyncio
import json
import mimetypes
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from vidstream.backoff import Backoff

CHUNK = 1024 * 1024


class SubmitError(Exception):
    """The gateway refused a request; the message is its error message."""


async def _check(response: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body: dict[str, Any] = await response.json(content_type=None)
    except ValueError:
        body = {}
    if response.status >= 400:
        err = body.get("error") or {}
        raise SubmitError(
            f"{response.status} {err.get('code', 'error')}: {err.get('message', response.reason)}"
        )
    return body


async def _read_file(path: Path, bar: Bar) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            bar.add(len(chunk))
            yield chunk


class Bar:
    """A one-line progress bar on a terminal; a line per 25% step otherwise."""

    def __init__(self, label: str, total: float, out: TextIO) -> None:
        self.label, self.total, self.out = label, max(total, 1e-9), out
        self.value = 0.0
        self.tty = out.isatty()
        self._shown = -1

    def add(self, amount: float) -> None:
        self.set(self.value + amount)

    def set(self, value: float) -> None:
        self.value = min(max(value, self.value), self.total)
        pct = int(100 * self.value / self.total)
        if self.tty:
            filled = pct * 30 // 100
            self.out.write(f"\r{self.label:<11} [{'#' * filled}{'.' * (30 - filled)}] {pct:3d}%")
            if pct == 100:
                self.out.write("\n")
            self.out.flush()
        elif pct // 25 > self._shown // 25 or (pct == 100 and self._shown != 100):
            self.out.write(f"{self.label}: {pct}%\n")
            self.out.flush()
        self._shown = pct


async def submit(
    video: Path,
    gateway: str,
    *,
    burn: bool = True,
    language: str | None = None,
    wait: bool = False,
    kind: str = "subtitle",
    api_key: str | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Upload `video`, create a job; with `wait`, follow it to the end. Returns the exit status."""
    gateway = gateway.rstrip("/")
    size = (await asyncio.to_thread(video.stat)).st_size
    content_type = mimetypes.guess_type(video.name)[0] or "application/octet-stream"
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=15, sock_read=120)
    auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    # The key goes to the gateway only: upload URLs may point at a bucket on another host.
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.post(
            f"{gateway}/v1/uploads",
            headers=auth,
            json={
                "filename": video.name,
                "content_type": content_type,
                "size": size,
            },
        ) as r:
            upload = await _check(r)
        bar = Bar("upload", size, err)
        headers = {**upload.get("headers", {}), "Content-Length": str(size)}
        async with http.put(
            upload["upload_url"], data=_read_file(video, bar), headers=headers
        ) as r:
            if r.status >= 300:
                raise SubmitError(f"upload failed: {r.status} {(await r.text())[:300]}")
        options: dict[str, Any] = {
            "source": {"key": upload["key"]}, "kind": kind, "burn_subtitles": burn,
        }  # fmt: skip
        if language:
            options["language"] = language
        async with http.post(f"{gateway}/v1/jobs", json=options, headers=auth) as r:
            job = await _check(r)
        err.write(f"job {job['id']} queued\n")
        if not wait:
            out.write(json.dumps(job, indent=2) + "\n")
            return 0
        status = await follow(job["links"]["ws"], job["id"], job["ws_token"], err)
        async with http.get(job["links"]["self"], headers=auth) as r:
            final = await _check(r)
    out.write(f"job {final['id']}: {final['status']}\n")
    if final.get("error"):
        out.write(f"error: {final['error']['code']}: {final['error']['message']}\n")
    for name, output in final.get("outputs", {}).items():
        out.write(
            f"{name:<10} {output['key']}  ({output['size']} bytes)\n           {output['url']}\n"
        )
    return 0 if status == "completed" else 1


async def follow(ws_url: str, job_id: str, token: str, err: TextIO, retries: int = 6) -> str:
    """Watch a job over the WebSocket with a bar per stage; return its final status.

    A dropped connection (a notifier restarting, a network blip) is resumed from the last event
    seen, on whichever notifier answers, so no event is missed or shown twice.
    """
    bars: dict[str, Bar] = {}
    last_id = "0-0"  # from the start of the job's history: no early event is missed
    failures, backoff = 0, Backoff(0.5, 5.0)
    while True:
        try:
            async with connect(ws_url, open_timeout=15) as ws:
                await ws.send(json.dumps({"type": "subscribe", "job_id": job_id, "token": token,
                                          "last_event_id": last_id}))  # fmt: skip
                async for raw in ws:
                    failures = 0
                    backoff.reset()
                    msg = json.loads(raw)
                    if msg["type"] == "error":
                        raise SubmitError(f"{msg['code']}: {msg['message']}")
                    if msg["type"] != "event":
                        continue
                    last_id = msg["id"]
                    status = _show(msg, bars, err)
                    if status is not None:
                        return status
        except (ConnectionClosed, OSError, TimeoutError) as exc:
            failures += 1
            if failures > retries:
                raise SubmitError(f"lost the connection to the notifier: {exc}") from None
            err.write(f"connection to the notifier lost ({exc}); resuming\n")
            await backoff.sleep()


def _show(msg: dict[str, Any], bars: dict[str, Bar], err: TextIO) -> str | None:
    """Draw one event; return the final status when the event ends the job."""
    stage = msg.get("stage")
    if stage and stage not in bars:
        bars[stage] = Bar(stage, 1.0, err)
    if msg["event"] == "progress" and stage:
        bars[stage].set(float(msg.get("stage_progress", 0.0)))
    elif msg["event"] == "stage_completed" and stage:
        bars[stage].set(1.0)
    elif msg["event"] == "retrying":
        error = msg.get("error") or {}
        err.write(f"\n{stage}: {error.get('code')}: {error.get('message')}; "
                  f"trying again (attempt {int(msg.get('attempt', 0)) + 1})\n")  # fmt: skip
    if msg["status"] not in ("completed", "failed", "cancelled"):
        return None
    if msg["status"] == "completed":
        for bar in bars.values():
            bar.set(1.0)
    return str(msg["status"])
