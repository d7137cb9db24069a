"""The compose kind: a video rendered from a timeline (`composer`), its narration transcribed
first when asked (`transcribing`).

Its intake checks the timeline (or a template and its variables) whole before anything is
queued, every problem at once by path (`InvalidTimeline`, answered 422). A compose job owns the
uploads its timeline reads (as a subtitle job owns its source): each is taken for the job, so one
upload serves one job, and retention deletes them with it. A refused request gives back what it
took.
"""

from __future__ import annotations

import asyncio
import json

from vidstream.compose import rules, variables
from vidstream.compose.rules import InvalidTimeline, Limits, Problem
from vidstream.compose.timeline import SOUNDING, SubtitlesClip, Timeline, Track
from vidstream.core.errors import InvalidKey
from vidstream.job.kinds import ComposeOptions, ComposeRequest
from vidstream.job.model import Stage, is_job_id
from vidstream.kinds.base import Draft, Incoming, KindHandler, speech_model
from vidstream.kinds.composer import compose, compose_piece
from vidstream.kinds.transcribing import transcribe, transcribe_piece
from vidstream.services import Services
from vidstream.state.budget import cleanup
from vidstream.state.templates import NAME, Templates
from vidstream.state.tickets import Tickets
from vidstream.storage.names import check_source_key


def limits(services: Services) -> Limits:
    s = services.settings
    return Limits(s.max_tracks, s.max_clips, s.max_duration_s, s.max_pixels,
                  s.compose_max_memory_bytes)  # fmt: skip


async def intake(incoming: Incoming, request: ComposeRequest) -> Draft:
    """Check a compose request before anything is queued; every problem at once, by path."""
    services, tenant = incoming.services, incoming.tenant
    await incoming.refuse_if_paused()  # before its uploads are taken
    timeline = await timeline_of(services, tenant, request)
    clip_name = transcribed(timeline, request.transcribe)
    timeline = with_captions(timeline, clip_name)
    await check_jobs(services, tenant, timeline)
    taken = await take_assets(services, tenant, incoming.job_id, timeline)
    heard = timeline.named(clip_name) if clip_name else None
    source_key = str(getattr(heard, "key", "") or "")
    options = ComposeOptions(language=request.language, burn_subtitles=False,
                             formats=request.formats, transcribe=clip_name,
                             preview=request.preview, model=request.model,
                             task=request.task)  # fmt: skip
    if clip_name:  # its narration is transcribed: by a model that speaks its language
        speech_model(services.settings, options)
    return Draft(
        source_key,  # the transcribed clip's upload ("" when nothing is transcribed)
        options,
        taken.get(source_key, ""),
        timeline=json.dumps(rules.as_json(timeline), separators=(",", ":")),
        assets=tuple(taken),
    )


async def timeline_of(services: Services, tenant: str, request: ComposeRequest) -> Timeline:
    """The timeline a job request gives, or its template filled with its variables."""
    given, named = request.timeline, request.template
    if (given is None) == (named is None):
        raise InvalidTimeline([Problem("timeline", "one_of", "give a timeline or a template")])
    if named is not None:
        if not isinstance(named, str) or not NAME.fullmatch(named):
            raise InvalidTimeline([Problem("template", "name", "not a template name")])
        template = await Templates(services.redis, services.keys).get(tenant, named)
        if template is None:
            raise InvalidTimeline([Problem("template", "unknown", f"no template {named!r}")])
        given = template.timeline
    raw, missing = variables.fill_known(given, variables.check(request.variables))
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
                                        f"another job) is at {_quoted(key)}"))  # fmt: skip
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
        await asyncio.shield(cleanup(tickets.give_back_all(taken, job_id)))
        raise
    return taken


def _quoted(key: str, limit: int = 80) -> str:
    return repr(key if len(key) <= limit else key[:limit] + "…")


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


HANDLER = KindHandler(
    intake,
    {Stage.TRANSCRIBE: transcribe, Stage.RENDER: compose},
    pieces={Stage.TRANSCRIBE: transcribe_piece, Stage.RENDER: compose_piece},
)
