"""Reading request bodies within bounds: JSON of limited size and depth with valid strings, and
multipart forms with few parts, small option fields and each field once; and checking a body
against its request model (`validated`).

Every malformed body is a 4xx that says what is wrong without echoing the client's value back at
length (`short`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import BadContentDispositionHeader, BadContentDispositionParam
from pydantic import BaseModel, ValidationError

from vidstream.http.errors import ApiError

MAX_DEPTH = 16  # deeper than any request of the API; deep nesting only costs the parser
MAX_PARTS = 16
MAX_FIELDS_BYTES = 16 * 1024  # all option fields of a form together
REPEATABLE = frozenset({"formats"})  # `formats=srt&formats=vtt`, as documented


def short(value: object, limit: int = 40) -> str:
    """A client's value quoted for a message, cut to `limit` characters."""
    text = value if isinstance(value, str) else repr(value)
    return repr(text if len(text) <= limit else text[:limit] + "…")


# For the depth scan: `{}` read as `[]`, and everything but brackets and quotes dropped.
_AS_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')


def _depth_ok(raw: bytes, limit: int) -> bool:
    """Whether brackets nest at most `limit` deep outside strings, without parsing. Each step is
    one pass of C over the bytes, never a Python loop over each (for 1 MiB: about 1 to 30 ms,
    where a loop took 40 to 150 ms)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return True  # too few brackets to nest deeper, wherever they are
    # Escapes out: backslashes occur only in strings and pair up left to right, so escaped
    # backslashes first, then escaped quotes. Every quote left opens or closes a string.
    plain = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Only quotes and brackets. Two adjacent quotes (an empty string, or the end of one string
    # and the start of the next) enclose no bracket: dropping them changes no bracket's side.
    shape = plain.translate(_AS_SQUARE, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in shape:
        shape = b"".join(shape.split(b'"')[::2])  # the pieces outside strings
    # Each pass takes out the innermost pairs, one level; what remains is nested deeper.
    for _ in range(limit):
        inner = shape.replace(b"[]", b"")
        if inner == shape:
            break
        shape = inner
    return b"[" not in shape  # (an unclosed bracket left counts as too deep: the JSON is bad)


def parse_json(raw: bytes) -> dict[str, Any]:
    """A JSON object from a request body, or `ApiError(400, invalid_json)`."""
    if not _depth_ok(raw, MAX_DEPTH):
        raise ApiError(400, "invalid_json", f"JSON may nest at most {MAX_DEPTH} levels deep.")
    try:
        # UTF-8 only (RFC 8259): `json.loads` would take UTF-16 and UTF-32 bytes too, whose
        # quotes and brackets the depth scan does not see.
        body = json.loads(raw.decode("utf-8-sig"))
        # A lone surrogate ("\\ud800") parses, but is no character: refuse it here rather than
        # fail later when the value is written anywhere.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeError, RecursionError):
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The request body must be a JSON object.")
    return body


async def read_json(request: web.Request) -> dict[str, Any]:
    return parse_json(await request.read())  # read() is bounded by client_max_size


@dataclass
class Form:
    """What a multipart form said besides its file."""

    fields: dict[str, str] = field(default_factory=dict)
    size: int = 0
    parts: int = 0

    def add(self, name: str, value: str) -> None:
        self.size += len(name) + len(value)
        if self.size > MAX_FIELDS_BYTES:
            raise ApiError(400, "invalid_request", "The form's fields are too large.")
        if name in self.fields:
            if name not in REPEATABLE:
                raise ApiError(400, "invalid_request", f"The field {short(name)} is repeated.")
            value = f"{self.fields[name]},{value}"
        self.fields[name] = value


async def parts(request: web.Request, form: Form) -> AsyncIterator[BodyPartReader]:
    """The parts of a multipart body, at most MAX_PARTS, each a plain part; a malformed body
    (no boundary, a bad part header, cut short) is a 400."""
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            form.parts += 1
            if form.parts > MAX_PARTS:
                raise ApiError(
                    400, "invalid_request", f"A form may have {MAX_PARTS} parts at most."
                )
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "invalid_request", "nested multipart bodies are not supported")
            if not part.name:  # also what aiohttp leaves of a header it only warned about
                raise ApiError(400, "invalid_multipart", "Every part needs a name.")
            yield part
    except (ValueError, AssertionError, RuntimeError, UnicodeError, HttpProcessingError,
            BadContentDispositionHeader, BadContentDispositionParam) as exc:  # fmt: skip
        # aiohttp raises these for a body that does not parse as multipart/form-data (no
        # boundary, a part header that is no header, a body cut short).
        raise ApiError(400, "invalid_multipart", "The multipart body is malformed.") from exc


async def text_field(part: BodyPartReader, form: Form) -> str:
    """A small text field's value (bounded by what the form may still hold)."""
    budget = MAX_FIELDS_BYTES - form.size
    raw = bytearray()
    while chunk := await part.read_chunk(4096):
        raw += chunk
        if len(raw) > budget:
            raise ApiError(400, "invalid_request", "The form's fields are too large.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_request", "Form fields must be UTF-8 text.") from None


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], body: dict[str, Any], what: str) -> M:
    """`body` checked against a request `model`, or `ApiError(400, invalid_request)` saying
    what is wrong: every unknown field at once, else every problem at once, in the message and
    one by one in `details` (`what` names the request in messages: "a subtitle job")."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = exc.errors()
    unknown = sorted(str(p["loc"][0]) for p in problems if p["type"] == "extra_forbidden")
    if unknown:
        names = ", ".join(short(n, 30) for n in unknown[:5])
        raise ApiError(400, "invalid_request", f"unknown field(s) for {what}: {names}")
    details: list[dict[str, str]] = []
    for problem in problems[:20]:
        # A union's member (`position`'s "bottom" or {x, y}) is not part of where it is.
        where = ".".join(
            str(p) for p in problem["loc"] if not str(p).startswith(("literal[", "Point"))
        )
        if problem["type"] == "invalid_request":  # an option's own parser: its own words
            said = problem["msg"]
            message = said if not where or said.startswith(where) else f"{where}: {said}"
        elif problem["type"] == "missing":
            message = f"{where} is required"
        else:
            message = f"{where}: {problem['msg']}"
        if all(message != d["message"] for d in details):
            details.append({"path": where, "message": message})
    said = "; ".join(d["message"] for d in details)
    raise ApiError(400, "invalid_request", said, details=details)
