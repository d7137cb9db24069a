"""`vidstream get JOB [-o DIR]`: download a job's outputs (its transcript in each format, its
video, poster or preview) into a folder, each under a plain name (`transcript.srt`,
`video.mp4`), written whole or not at all."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

from vidstream.cli import http
from vidstream.cli.client import Client, SubmitError

READ_TIMEOUT_S = 60.0  # without a byte for this long, a download is given up
# The transcript's formats (`job.options.ALL_FORMATS`, which tests/test_exports.py checks this
# against), named here so that the command starts without importing the job model.
TRANSCRIPT_FORMATS = ("json", "srt", "vtt", "ass", "txt")


def file_name(name: str, output: dict[str, Any]) -> str:
    """What an output is saved as: the transcript's formats as `transcript.<format>`, any other
    output as `<name>.<its extension>`."""
    ext = PurePosixPath(str(output.get("key", ""))).suffix.lstrip(".").lower() or "bin"
    stem = "transcript" if name in ("transcript", *TRANSCRIPT_FORMATS) else name
    return f"{stem}.{ext}"


async def get(job_id: str, gateway: str, api_key: str | None, folder: Path,
              out: TextIO = sys.stdout) -> int:  # fmt: skip
    """Download every output of `job_id` into `folder`; 0 once all are there, 1 when the job
    has none (it has not completed, or failed)."""
    client = Client(gateway, api_key, READ_TIMEOUT_S)
    job = await client.get(f"/v1/jobs/{job_id}")
    outputs: dict[str, dict[str, Any]] = job.get("outputs") or {}
    if not outputs:
        print(f"{job_id}: {job.get('status')}, no outputs yet", file=out)
        return 1
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    for name, output in sorted(outputs.items()):
        path = folder / file_name(name, output)
        size = await _download(client.url(str(output["url"])), path,
                               int(output.get("size") or 0))  # fmt: skip
        print(f"{path}  ({size} bytes)", file=out)
    return 0


async def _download(url: str, path: Path, size: int) -> int:
    """`url` into `path` through a `.part` file renamed once whole: never a half file under
    the name. The link is signed: it carries no API key."""
    part = path.with_name(path.name + ".part")
    written = 0
    f = await asyncio.to_thread(part.open, "wb")

    def write(chunk: bytes) -> None:  # (in the request's thread)
        nonlocal written
        written += len(chunk)
        if size and written > size:
            raise SubmitError(f"{path.name} is larger than the job says ({size} bytes)")
        f.write(chunk)

    try:
        answer = await http.request("GET", url, timeout_s=READ_TIMEOUT_S, sink=write)
        if answer.status >= 300:
            raise SubmitError(f"download of {path.name} failed: {answer.status}")
    except BaseException:
        await asyncio.to_thread(f.close)
        await asyncio.to_thread(part.unlink, True)
        raise
    await asyncio.to_thread(f.close)
    await asyncio.to_thread(part.replace, path)
    return written
