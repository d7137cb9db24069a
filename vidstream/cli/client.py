"""`vidstream submit` and `vidstream jobs`: a client of the gateway and the notifier, as a frontend
would be. Several files go at once, each uploaded, created and followed live over the WebSocket.

On a terminal the progress is drawn with rich (a bar per job and stage, with speed and time
left); otherwise it is one line per quarter, so logs and scripts read it plainly.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, TextIO

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from vidstream.cli import http
from vidstream.core.backoff import Backoff

TERMINAL = ("completed", "failed", "cancelled")


class SubmitError(Exception):
    """The gateway refused a request; the message is its error message."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status  # the gateway's HTTP status (0: refused here, before asking)


class Display(Protocol):
    def bar(self, label: str, total: float, *, transfer: bool = False) -> Any:
        """A new bar; `transfer` shows bytes and speed."""

    def set(self, bar: Any, value: float) -> None: ...

    def note(self, text: str) -> None: ...


class Lines:
    """Progress as lines: one per 25 % of each bar, for logs and pipes."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._bars: dict[int, list[Any]] = {}

    def bar(self, label: str, total: float, *, transfer: bool = False) -> int:
        self._bars[len(self._bars)] = [label, max(total, 1e-9), -1]
        return len(self._bars) - 1

    def set(self, bar: Any, value: float) -> None:
        label, total, shown = self._bars[bar]
        pct = int(100 * min(value, total) / total)
        if pct // 25 > shown // 25 or (pct == 100 and shown != 100):
            self.out.write(f"{label}: {pct}%\n")
            self.out.flush()
        self._bars[bar][2] = max(pct, shown)

    def note(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


class Bars:
    """Progress drawn by rich on a terminal: each bar with its speed and time left."""

    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description:<28}"), BarColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[detail]}"), TimeRemainingColumn(),
            console=Console(file=out), transient=False,
        )  # fmt: skip

    def __enter__(self) -> Bars:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def bar(self, label: str, total: float, *, transfer: bool = False) -> Any:
        return self.progress.add_task(label, total=total, detail="", transfer=transfer)

    def set(self, bar: Any, value: float) -> None:
        task = self.progress.tasks[bar]
        detail = ""
        if task.fields["transfer"] and task.total:  # bytes: say how many, and how fast
            speed = task.speed or 0.0
            detail = f"{value / 1e6:.1f}/{task.total / 1e6:.1f} MB {speed / 1e6:.1f} MB/s"
        self.progress.update(bar, completed=max(value, task.completed), detail=detail)

    def note(self, text: str) -> None:
        self.progress.console.print(text, highlight=False, markup=False)


def _check(response: http.Response) -> dict[str, Any]:
    body = response.json()
    if not isinstance(body, dict):
        body = {}
    if response.status >= 400:
        err = body.get("error") or {}
        raise SubmitError(
            f"{response.status} {err.get('code', 'error')}: {err.get('message', response.reason)}",
            response.status,
        )
    return body


class Client:
    """The gateway at `gateway`, with an API key if one is given."""

    def __init__(self, gateway: str, api_key: str | None, timeout_s: float = 120.0) -> None:
        self.gateway, self.timeout_s = gateway.rstrip("/"), timeout_s
        # The key goes to the gateway only: upload URLs may point at a bucket on another host.
        self.auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def url(self, path_or_url: str) -> str:
        return path_or_url if "://" in path_or_url else self.gateway + path_or_url

    async def get(self, path_or_url: str) -> dict[str, Any]:
        url = self.url(path_or_url)
        headers = self.auth if url.startswith(self.gateway) else {}
        return _check(await http.request("GET", url, headers=headers, timeout_s=self.timeout_s))

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {**self.auth, "Content-Type": "application/json"}
        data = json.dumps(body).encode()
        return _check(await http.request("POST", self.gateway + path, body=data,
                                         headers=headers, timeout_s=self.timeout_s))  # fmt: skip

    async def upload(self, video: Path, display: Display) -> str:
        """PUT `video` to a fresh upload link; return its storage key."""
        size = (await asyncio.to_thread(video.stat)).st_size
        content_type = mimetypes.guess_type(video.name)[0] or "application/octet-stream"
        ticket = await self.post(
            "/v1/uploads", {"filename": video.name, "content_type": content_type, "size": size}
        )
        bar = display.bar(f"{video.name} upload", size, transfer=True)
        headers = {**ticket.get("headers", {}), "Content-Length": str(size)}
        f = await asyncio.to_thread(video.open, "rb")
        try:
            body = http.Progress(f, lambda done: display.set(bar, done))
            answer = await http.request("PUT", ticket["upload_url"], body=body,
                                        headers=headers, timeout_s=self.timeout_s)  # fmt: skip
        finally:
            await asyncio.to_thread(f.close)
        if answer.status >= 300:
            said = answer.body[:300].decode(errors="replace")
            raise SubmitError(f"upload failed: {answer.status} {said}")
        return str(ticket["key"])


async def submit(
    videos: list[Path], gateway: str, fields: Mapping[str, Any] | None = None, *,
    wait: bool = False, kind: str | None = None, api_key: str | None = None,
    out: TextIO = sys.stdout, err: TextIO = sys.stderr,
) -> int:  # fmt: skip
    """Upload each video and create its job with the request `fields` (`language`, `model`,
    `max_chars_per_line`, ...), all at once; with `wait`, follow each to its end. Returns the
    exit status: 0 when every job completed (or was queued, without `wait`)."""
    fields = dict(fields or {})
    client = Client(gateway, api_key)
    if kind is not None:  # before any upload: a kind the gateway cannot make from a video
        await _check_kind(client, kind)
        fields["kind"] = kind
    await _check_model(client, fields)  # before any upload: a language it cannot do
    if err.isatty():
        with Bars(err) as bars:
            results = await _all(client, videos, bars, fields, wait)
    else:
        results = await _all(client, videos, Lines(err), fields, wait)
    for job in results:
        if not wait:
            out.write(json.dumps(job, indent=2) + "\n")
            continue
        out.write(f"job {job['id']}: {job['status']}\n")
        if job.get("error"):
            out.write(f"error: {job['error']['code']}: {job['error']['message']}\n")
        for name, output in job.get("outputs", {}).items():
            out.write(f"{name:<10} {output['key']}  ({output['size']} bytes)\n"
                      f"           {output['url']}\n")  # fmt: skip
    return 0 if all(not wait or j["status"] == "completed" for j in results) else 1


async def _check_kind(client: Client, kind: str) -> None:
    """Refuse a kind the gateway does not make from one video, naming those it does."""
    listed = (await client.get("/v1/kinds"))["kinds"]
    choices = [k["name"] for k in listed if k.get("from_video")]
    if kind not in choices:
        raise SubmitError(f"--kind must be one of {', '.join(choices)}")


async def _check_model(client: Client, fields: Mapping[str, Any]) -> None:
    """Refuse, before the bytes are sent, a model the gateway does not offer or a language or
    task it cannot do (the gateway would refuse the job after the upload)."""
    try:
        listed = await client.get("/v1/models")
    except SubmitError as exc:
        if exc.status == 404:  # an older gateway: it checks the job itself
            return
        raise
    models = {m["name"]: m for m in listed.get("models", [])}
    name = fields.get("model") or listed.get("default")
    model = models.get(name)
    if model is None:
        raise SubmitError(f"--model must be one of {', '.join(models)}")
    language = str(fields.get("language") or "en").lower()
    if language == "auto" and not model.get("multilingual"):
        raise SubmitError(f"the model {name} transcribes only English: it cannot detect one")
    known = model.get("languages") or []  # none: the gateway cannot tell (it refuses nothing)
    if language != "auto" and known and language not in known:
        raise SubmitError(
            f"the model {name} does not transcribe {language!r}; it knows "
            f"{', '.join(model.get('languages', []))}"
        )
    if fields.get("task") == "translate" and not model.get("translate"):
        raise SubmitError(f"the model {name} cannot translate: choose a multilingual --model")


async def _all(
    client: Client, videos: list[Path], display: Display, fields: Mapping[str, Any],
    wait: bool,
) -> list[dict[str, Any]]:  # fmt: skip
    async def one(video: Path) -> dict[str, Any]:
        key = await client.upload(video, display)
        job = await client.post("/v1/jobs", {**fields, "source": {"key": key}})
        display.note(f"job {job['id']} queued ({video.name})")
        if not wait:
            return job
        await follow(job, display, video.name)
        return await client.get(job["links"]["self"])

    return list(await asyncio.gather(*(one(v) for v in videos)))


async def follow(job: dict[str, Any], display: Display, label: str, retries: int = 6) -> str:
    """Watch a job over the WebSocket with a bar per stage; return its final status.

    A dropped connection (a notifier restarting, a network blip) is resumed from the last event
    seen, on whichever notifier answers, so no event is missed or shown twice.
    """
    bars: dict[str, Any] = {}
    last_id = "0-0"  # from the start of the job's history: no early event is missed
    floor = (0, 0)  # the snapshot's last event: a final event older than it is of an old run
    failures, backoff = 0, Backoff(0.5, 5.0)
    while True:
        try:
            async with connect(job["links"]["ws"], open_timeout=15) as ws:
                subscribe = {"type": "subscribe", "job_id": job["id"], "token": job["ws_token"],
                             "last_event_id": last_id}  # fmt: skip
                await ws.send(json.dumps(subscribe))
                async for raw in ws:
                    failures = 0
                    backoff.reset()
                    msg = json.loads(raw)
                    if msg["type"] == "error":
                        raise SubmitError(f"{msg['code']}: {msg['message']}")
                    if msg["type"] in ("snapshot", "reset"):
                        # The job as it is now. After a reset (history trimmed or expired during
                        # a drop) no event may follow for a job that ended meanwhile, so its
                        # status is the answer; only events at or after it may end the job.
                        floor = _order(msg.get("last_event_id") or "0-0")
                        if msg["type"] == "reset":
                            last_id = msg.get("last_event_id") or last_id
                            if msg["job"].get("status") in TERMINAL:
                                return str(msg["job"]["status"])
                        continue
                    if msg["type"] != "event":
                        continue
                    last_id = msg["id"]
                    status = _show(msg, bars, display, label)
                    if status is not None and _order(last_id) >= floor:
                        return status  # an earlier run's final event (a replay) does not end it
        except (ConnectionClosed, OSError, TimeoutError) as exc:
            failures += 1
            if failures > retries:
                raise SubmitError(f"lost the connection to the notifier: {exc}") from None
            display.note(f"connection to the notifier lost ({exc}); resuming")
            await backoff.sleep()


def _order(event_id: str) -> tuple[int, int]:
    """An event id ("ms-seq") as a tuple that sorts as the server orders events."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


def _show(msg: dict[str, Any], bars: dict[str, Any], display: Display, label: str) -> str | None:
    """Draw one event; return the final status when the event ends the job."""
    stage = msg.get("stage")
    if stage and stage not in bars:
        bars[stage] = display.bar(f"{label} {stage}", 1.0)
    if msg["event"] == "progress" and stage:
        display.set(bars[stage], float(msg.get("stage_progress", 0.0)))
    elif msg["event"] == "stage_completed" and stage:
        display.set(bars[stage], 1.0)
    elif msg["event"] == "retrying":
        error = msg.get("error") or {}
        display.note(f"{label} {stage}: {error.get('code')}: {error.get('message')}; "
                     f"trying again (attempt {int(msg.get('attempt', 0)) + 1})")  # fmt: skip
    if msg["status"] not in TERMINAL:
        return None
    if msg["status"] == "completed":
        for bar in bars.values():
            display.set(bar, 1.0)
    return str(msg["status"])


async def recent_jobs(gateway: str, api_key: str | None, limit: int) -> list[dict[str, Any]]:
    """`GET /v1/jobs`: the caller's newest jobs."""
    page = await Client(gateway, api_key, timeout_s=30.0).get(f"/v1/jobs?limit={limit}")
    return list(page["jobs"])
