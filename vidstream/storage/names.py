"""Object keys: where each kind of object lives, and rules that keep user input in its prefix.

uploads/{upload_id}/source                    sources, uploaded by clients (names kept aside)
jobs/{job_id}/{run}/transcript.{json,srt,vtt}  transcripts
rendered/{job_id}-{timestamp}-{run}.mp4        rendered videos (and -poster.jpg, -preview.mp4)

`{run}` names the run that wrote the object: a run that lost its lease (its worker was presumed
dead, then came back) writes beside the run that took over, never over it, and the step that
records a stage's outputs names only the objects of the run that still holds the lease.
"""

from __future__ import annotations

import re
import secrets
import time
import unicodedata
from pathlib import PurePosixPath
from urllib.parse import quote

from vidstream.core.errors import InvalidKey, ObjectTooLarge

UPLOADS = "uploads/"
MAX_KEY_LENGTH = 512
_UNSAFE = re.compile(r"[^A-Za-z0-9._()\- ]+")

CONTENT_TYPES = {
    "json": "application/json",
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
    "ass": "text/x-ssa",
    "txt": "text/plain; charset=utf-8",
    "mp4": "video/mp4",
    "webm": "video/webm",
    "jpg": "image/jpeg",
}


def safe_filename(name: str, default: str = "upload") -> str:
    """A file name reduced to harmless characters: no directories, no control characters."""
    name = unicodedata.normalize("NFKC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = _UNSAFE.sub("_", name).strip(" .")
    if not name:
        return default
    stem, dot, ext = name.rpartition(".")
    if dot and len(ext) <= 10 and stem:
        return f"{stem[: 100 - len(ext) - 1]}.{ext}"
    return name[:100]


def check_key(key: str) -> str:
    """Return `key` if it is a well-formed relative key, else raise `InvalidKey`."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise _bad_key("a key must be 1 to 512 characters")
    if key.startswith("/") or "\\" in key:
        raise _bad_key("a key must be a relative path with forward slashes")
    if any(unicodedata.category(ch)[0] == "C" for ch in key):
        raise _bad_key("a key must not contain control characters")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise _bad_key("a key must not contain empty, '.' or '..' segments")
    if parts[0].startswith("."):  # the stores' own (`.partial/`: files being written)
        raise _bad_key("a key must not start with '.'")
    if any(len(part.encode("utf-8", "surrogatepass")) > 255 for part in parts):
        raise _bad_key("a key segment may be 255 bytes at most")  # a file name's limit
    return key


def check_source_key(key: str) -> str:
    """Sources come from the uploads prefix only, so a job cannot read another job's outputs."""
    check_key(key)
    if not key.startswith(UPLOADS):
        raise _bad_key(f"a source key must start with {UPLOADS!r}")
    return key


def too_large(max_size: int) -> ObjectTooLarge:
    return ObjectTooLarge(f"the upload is larger than {max_size} bytes")


def _bad_key(message: str) -> InvalidKey:
    return InvalidKey(message)


def new_upload_key() -> str:
    """A source's key, chosen here: never the client's name or extension, so nothing a client
    sends decides how a file is read (the probe decides that from the bytes)."""
    return f"{UPLOADS}{secrets.token_hex(12)}/source"


def transcript_key(job_id: str, fmt: str, run: str) -> str:
    """Where run `run` of a job's transcription stores its transcript in format `fmt`."""
    return f"jobs/{job_id}/{run}/transcript.{fmt}"


def segment_key(job_id: str, index: int, run: str, ext: str = "mp4") -> str:
    """Where run `run` stores segment `index` of a job's fanned-out render (deleted once the
    segments are joined)."""
    return f"jobs/{job_id}/{run}/segment-{index:04d}.{ext}"


def rendered_key(
    job_id: str, run: str, now: float | None = None, part: str = "", ext: str = "mp4"
) -> str:
    """Where run `run` of a job's render stores its file (`part`: "-poster", "-preview")."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"rendered/{job_id}-{stamp}-{run}{part}.{ext}"


def content_disposition(filename: str) -> str:
    """A download header naming the file: `filename` for old clients, RFC 5987 `filename*` for
    names beyond ASCII."""
    return f"attachment; filename=\"{filename}\"; filename*=UTF-8''{quote(filename)}"


def content_type_for(key: str) -> str:
    return CONTENT_TYPES.get(
        PurePosixPath(key).suffix.lstrip(".").lower(), "application/octet-stream"
    )
