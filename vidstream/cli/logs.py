"""`vidstream logs JOB_ID [--follow] [--json]`: a job's log lines from every role, through the
gateway (`GET /v1/jobs/{id}/logs`), as text or one JSON object per line.

With `--follow` it polls for new lines every second, and ends once the job has ended and a poll
after that brings nothing new: the last lines reach the gateway a moment after the job ends.
"""

from __future__ import annotations

import argparse
import json
import sys
from http.client import HTTPException
from typing import Any, TextIO
from urllib.parse import quote

from vidstream.cli.client import TERMINAL, Client, SubmitError
from vidstream.core.backoff import Backoff, pause
from vidstream.core.settings import Settings

POLL_S = 1.0
REQUEST_TIMEOUT_S = 30.0
PAGE = 1000
RETRIES = 6  # failed polls in a row before `--follow` gives up


async def main(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Print the job's lines (and with `--follow`, the ones still to come); the exit status."""
    gateway = args.gateway or settings.gateway_url
    logs = JobLogs(Client(gateway, args.api_key, REQUEST_TIMEOUT_S), args.job_id)
    try:
        await logs.show(out, as_json=args.json)
        if args.follow:
            await logs.follow(out, as_json=args.json)
    except (SubmitError, OSError, HTTPException) as exc:  # (TimeoutError is an OSError)
        print(f"vidstream: {str(exc) or 'timed out'}", file=sys.stderr)
        return 1
    return 0


class JobLogs:
    """One job's lines, read page by page from where the last read ended."""

    def __init__(self, client: Client, job_id: str) -> None:
        self.client, self.job_id = client, quote(job_id, safe="")
        self.after = "0-0"

    async def show(self, out: TextIO, *, as_json: bool) -> int:
        """Print every line after the last one shown; return how many."""
        shown = 0
        while True:
            page = await self.client.get(
                f"/v1/jobs/{self.job_id}/logs?after={self.after}&limit={PAGE}"
            )
            for line in page["logs"]:
                out.write((json.dumps(line) if as_json else format_line(line)) + "\n")
                self.after = line["id"]
            shown += len(page["logs"])
            out.flush()
            if page["next"] is None:
                return shown

    async def follow(self, out: TextIO, *, as_json: bool) -> None:
        """Print new lines as they come, until the job has ended and nothing more came."""
        backoff, failures, ended = Backoff(POLL_S, 10.0), 0, False
        while True:
            try:
                # The status before the lines: once it says ended, the job's last lines are
                # logged and, a poll interval later, shipped; a poll bringing none ends it.
                job = await self.client.get(f"/v1/jobs/{self.job_id}")
                shown = await self.show(out, as_json=as_json)
            except (SubmitError, OSError, HTTPException) as exc:
                failures += 1  # a gateway restart or a network blip: wait and go on
                if failures > RETRIES or not _transient(exc):
                    raise
                await backoff.sleep()
                continue
            failures = 0
            backoff.reset()
            if ended and not shown:
                return
            ended = job["status"] in TERMINAL
            await pause(POLL_S)


def _transient(exc: Exception) -> bool:
    """A failure worth another poll: the network, or the gateway or Redis briefly away."""
    return not isinstance(exc, SubmitError) or str(exc).startswith(("502", "503", "504"))


def format_line(line: dict[str, Any]) -> str:
    """`time role stage level event key=value ...`, as a person reads it."""
    fields = " ".join(f"{k}={_show(v)}" for k, v in line.get("fields", {}).items())
    head = (f"{line['at']} {line.get('role') or '-':<10} {line.get('stage') or '-':<10} "
            f"{line['level']:<7} {line['event']}")  # fmt: skip
    return f"{head} {fields}".rstrip()


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    if text == "" or any(c.isspace() or c in "\"'=" for c in text):
        return json.dumps(text)  # quoted, so each field reads as one
    return text
