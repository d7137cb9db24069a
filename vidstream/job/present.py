"""The job object as clients see it (REST and WebSocket), with signed links to its outputs."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from vidstream.job.model import Job, isoformat
from vidstream.job.pipelines import pipeline_of
from vidstream.storage.base import ObjectStore

_SUFFIX = {"transcript": ".json", "srt": ".srt", "vtt": ".vtt", "video": ".subtitled.mp4"}
_ORDER = {name: i for i, name in enumerate(_SUFFIX)}


def download_name(job: Job, output: str) -> str:
    """A friendly file name for a download: the source's name with the output's suffix."""
    stem = PurePosixPath(job.source_name).stem or job.id
    return f"{stem}{_SUFFIX.get(output, '')}"


async def present_job(job: Job, store: ObjectStore, url_ttl_s: int) -> dict[str, Any]:
    outputs = {}
    for name, out in sorted(job.outputs.items(), key=lambda item: _ORDER.get(item[0], 9)):
        url = await store.presign_get(out.key, download_name(job, name), url_ttl_s)
        outputs[name] = {
            "key": out.key,
            "url": url,
            "size": out.size,
            "content_type": out.content_type,
        }
    media = job.media
    return {
        "id": job.id,
        "tenant": job.tenant,
        "kind": job.kind.value,
        "priority": job.priority.value,
        "stages": [stage.value for stage in pipeline_of(job).stages],
        "request_id": job.request_id or None,
        "status": job.status.value,
        "stage": job.stage.value if job.stage else None,
        "progress": round(job.progress, 4),
        "created_at": isoformat(job.created_at),
        "updated_at": isoformat(job.updated_at),
        "source": {"key": job.source_key, "name": job.source_name or None},
        "options": job.options.to_dict(),
        "media": {
            "duration": round(media.duration, 3),
            "width": media.width,
            "height": media.height,
        }
        if media
        else None,
        "outputs": outputs,
        "error": job.error.to_dict() if job.error else None,
        "attempts": job.attempts,
    }
