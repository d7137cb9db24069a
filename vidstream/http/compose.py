"""Compose jobs at the gateway: the timeline (or a template and its variables) checked whole
before anything is queued, templates kept per tenant, and the timeline's JSON Schema.

A compose job owns the uploads its timeline reads (as a subtitle job owns its source): each is
taken for the job, so one upload serves one job, and retention deletes them with it. A failed
request gives back what it took.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from vidstream.compose import rules, variables
from vidstream.compose.rules import InvalidTimeline, Limits, Problem
from vidstream.compose.timeline import (
    SOUNDING,
    SubtitlesClip,
    Timeline,
    Track,
)
from vidstream.core.errors import InvalidKey
from vidstream.http.auth import tenant_of
from vidstream.http.bodies import read_json, short
from vidstream.http.errors import ApiError
from vidstream.http.state import SERVICES
from vidstream.job.model import Kind, Options, is_job_id
from vidstream.services import Services
from vidstream.state.budget import cleanup
from vidstream.state.templates import (
    MAX_BYTES,
    MAX_TEMPLATES,
    NAME,
    Template,
    TemplateLimit,
    Templates,
)
from vidstream.state.tickets import Tickets
from vidstream.storage.names import check_source_key

routes = web.RouteTableDef()

COMPOSE_FIELDS = ("timeline", "template", "variables", "transcribe", "preview")
_SCHEMA: dict[str, Any] = Timeline.model_json_schema()


def limits(services: Services) -> Limits:
    s = services.settings
    return Limits(s.max_tracks, s.max_clips, s.max_duration_s, s.max_pixels,
                  s.compose_max_memory_bytes)  # fmt: skip


async def timeline_of(services: Services, tenant: str, body: dict[str, Any]) -> Timeline:
    """The timeline a job request gives, or its template filled with its variables."""
    given, named = body.get("timeline"), body.get("template")
    if (given is None) == (named is None):
        raise InvalidTimeline([Problem("timeline", "one_of", "give a timeline or a template")])
    if named is not None:
        if not isinstance(named, str) or not NAME.fullmatch(named):
            raise InvalidTimeline([Problem("template", "name", "not a template name")])
        template = await Templates(services.redis, services.keys).get(tenant, named)
        if template is None:
            raise InvalidTimeline([Problem("template", "unknown", f"no template {named!r}")])
        given = template.timeline
    raw, missing = variables.fill_known(given, variables.check(body.get("variables")))
    try:
        timeline = rules.parse(raw, limits(services))
    except InvalidTimeline as exc:  # every problem at once: the variables' and the timeline's
        raise InvalidTimeline([*missing, *exc.problems]) from None
    if missing:
        raise InvalidTimeline(missing)
    return timeline


def transcribed(timeline: Timeline, value: object) -> str:
    """The clip `transcribe` names: a name, or true for the one named clip with sound."""
    if value in (None, False, ""):
        return ""
    if value is True:
        named = [c.name for _, _, c in timeline.clips() if isinstance(c, SOUNDING) and c.name]
        if len(named) == 1 and named[0] is not None:
            return named[0]
        raise InvalidTimeline([Problem("transcribe", "which_clip",
                                       "name the audio or video clip to transcribe")])  # fmt: skip
    clip = timeline.named(value) if isinstance(value, str) else None
    if not isinstance(clip, SOUNDING):
        raise InvalidTimeline([Problem("transcribe", "unknown_clip",
                                       "no audio or video clip has that name")])  # fmt: skip
    return str(value)


def with_captions(timeline: Timeline, clip_name: str) -> Timeline:
    """Subtitles of the transcribed clip on top, unless the timeline places them itself."""
    own = [c for _, _, c in timeline.clips()
           if isinstance(c, SubtitlesClip) and c.job is None and c.key is None]  # fmt: skip
    if not clip_name:
        for t, c, clip in timeline.clips():
            if clip in own:
                raise InvalidTimeline([Problem(
                    f"timeline.tracks[{t}].clips[{c}]", "no_source",
                    "give job or key, or transcribe a clip of the timeline",
                )])  # fmt: skip
        return timeline
    if own:
        return timeline
    heard = timeline.named(clip_name)
    assert heard is not None
    subtitles = SubtitlesClip(type="subtitles", start=heard.start, duration=heard.duration)
    track = Track(name=None, clips=[subtitles])
    return timeline.model_copy(update={"tracks": [*timeline.tracks, track]})


def _paths(timeline: Timeline) -> dict[str, str]:
    """Each key with where it is first used."""
    found: dict[str, str] = {}
    for t, c, clip in timeline.clips():
        key = getattr(clip, "key", None)
        if isinstance(key, str):
            found.setdefault(key, f"timeline.tracks[{t}].clips[{c}].key")
    return found


async def take_assets(
    services: Services, tenant: str, job_id: str, timeline: Timeline
) -> dict[str, str]:
    """Take every upload the timeline reads for the job; the uploads' file names by key. Each
    must be an upload of the tenant's no other job took, and exist: else `InvalidTimeline`."""
    paths = _paths(timeline)
    problems = []
    for key, path in paths.items():
        try:
            check_source_key(key)
        except InvalidKey as exc:
            problems.append(Problem(path, "key", exc.message))
    if problems:
        raise InvalidTimeline(problems)
    tickets = Tickets(services.redis, services.keys)
    taken: dict[str, str] = {}
    try:
        for key, path in paths.items():
            ticket = await tickets.take(key, tenant, job_id)
            if ticket is None:
                problems.append(Problem(path, "missing_asset", "no upload of yours (unused by "
                                        f"another job) is at {short(key, 80)}"))  # fmt: skip
                continue
            taken[key] = ticket.filename
        heads = await asyncio.gather(*(services.store.head(key) for key in taken))
        for (key, _), info in zip(taken.items(), heads, strict=True):
            if info is None:
                problems.append(Problem(paths[key], "missing_asset", "nothing was uploaded yet"))
            elif info.size > services.settings.max_upload_bytes:
                problems.append(Problem(paths[key], "too_large", "the file is too large"))
        if problems:
            raise InvalidTimeline(problems)
    except BaseException:
        await asyncio.shield(cleanup(give_back(services, job_id, tuple(taken))))
        raise
    return taken


async def give_back(services: Services, job_id: str, keys: tuple[str, ...]) -> None:
    """The job `job_id` was not made after all: its uploads' tickets are free again (and their
    uploads abandoned unless another job takes them). Nothing is given back from a job that
    exists: the step that made it may have answered too late."""
    if await services.jobs.get(job_id) is not None:
        return
    tickets = Tickets(services.redis, services.keys)
    await asyncio.gather(*(tickets.give_back(key, job_id) for key in keys))


async def check_jobs(services: Services, tenant: str, timeline: Timeline) -> None:
    """Subtitles taken from another job: it must be the tenant's and have a transcript."""
    problems = []
    for t, c, clip in timeline.clips():
        if isinstance(clip, SubtitlesClip) and clip.job is not None:
            other = await services.jobs.get(clip.job) if is_job_id(clip.job) else None
            if other is None or other.tenant != tenant or "transcript" not in other.outputs:
                path = f"timeline.tracks[{t}].clips[{c}].job"
                message = "no job of yours with a transcript has that id"
                problems.append(Problem(path, "no_transcript", message))
    if problems:
        raise InvalidTimeline(problems)


def compose_options(body: dict[str, Any], clip: str) -> Options:
    return Options.parse({
        **{k: body[k] for k in ("language", "formats") if k in body},
        "burn_subtitles": False, "transcribe": clip, "preview": body.get("preview", False),
    })  # fmt: skip


def as_stored(timeline: Timeline) -> str:
    return json.dumps(rules.as_json(timeline), separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Composition:
    """A compose request, checked whole, with its uploads taken for the job."""

    timeline: str  # JSON, every default filled in
    assets: tuple[str, ...]
    source_key: str  # the transcribed clip's upload ("" when nothing is transcribed)
    source_name: str
    options: Options


async def composition(
    services: Services, tenant: str, job_id: str, body: dict[str, Any]
) -> Composition:
    """Check a compose request before anything is queued; every problem at once, by path."""
    options = compose_options(body, "")  # the plain options first: cheap, and no side effects
    timeline = await timeline_of(services, tenant, body)
    clip_name = transcribed(timeline, body.get("transcribe"))
    timeline = with_captions(timeline, clip_name)
    await check_jobs(services, tenant, timeline)
    taken = await take_assets(services, tenant, job_id, timeline)
    heard = timeline.named(clip_name) if clip_name else None
    source_key = str(getattr(heard, "key", "") or "")
    return Composition(
        as_stored(timeline),
        tuple(taken),
        source_key,
        taken.get(source_key, ""),
        replace(options, transcribe=clip_name),
    )


# -- templates ------------------------------------------------------------------------------


def _template_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not NAME.fullmatch(name):
        raise ApiError(404, "not_found", "No such template.")
    return name


@routes.post("/v1/templates")
async def save_template(request: web.Request) -> web.Response:
    services, tenant = request.app[SERVICES], tenant_of(request)
    body = await read_json(request)
    unknown = set(body) - {"name", "timeline", "description"}
    if unknown:
        raise ApiError(400, "invalid_request", f"unknown field(s): {short(', '.join(unknown))}")
    name, description = body.get("name"), body.get("description", "")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ApiError(400, "invalid_request", "name: 1-64 of letters, digits, _ . - ")
    if not isinstance(description, str) or len(description) > 500:
        raise ApiError(400, "invalid_request", "description: a string of at most 500 characters")
    raw = body.get("timeline")
    if len(json.dumps(raw)) > MAX_BYTES:
        raise ApiError(413, "too_large", f"A template is at most {MAX_BYTES} bytes of JSON.")
    rules.parse(raw, limits(services))  # placeholders sit in strings: the shape is checkable
    assert isinstance(raw, dict)
    template = Template(name, raw, variables.placeholders(raw), description)
    try:
        replaced = await Templates(services.redis, services.keys).save(tenant, template)
    except TemplateLimit:
        raise ApiError(409, "too_many_templates", f"At most {MAX_TEMPLATES} templates.") from None
    stored = await Templates(services.redis, services.keys).get(tenant, name)
    assert stored is not None
    return web.json_response(stored.to_dict(), status=200 if replaced else 201)


@routes.get("/v1/templates")
async def list_templates(request: web.Request) -> web.Response:
    services, tenant = request.app[SERVICES], tenant_of(request)
    found = await Templates(services.redis, services.keys).list(tenant)
    listed = [{k: v for k, v in t.to_dict().items() if k != "timeline"} for t in found]
    return web.json_response({"templates": listed})


@routes.get("/v1/templates/{name}")
async def get_template(request: web.Request) -> web.Response:
    services, tenant = request.app[SERVICES], tenant_of(request)
    found = await Templates(services.redis, services.keys).get(tenant, _template_name(request))
    if found is None:
        raise ApiError(404, "not_found", "No such template.")
    return web.json_response(found.to_dict())


@routes.delete("/v1/templates/{name}")
async def delete_template(request: web.Request) -> web.Response:
    services, tenant = request.app[SERVICES], tenant_of(request)
    if not await Templates(services.redis, services.keys).delete(tenant, _template_name(request)):
        raise ApiError(404, "not_found", "No such template.")
    return web.Response(status=204)


@routes.get("/v1/schemas/timeline.json")
async def timeline_schema(request: web.Request) -> web.Response:
    return web.json_response(_SCHEMA, headers={"Cache-Control": "public, max-age=3600"})


__all__ = ["COMPOSE_FIELDS", "Kind", "routes"]
