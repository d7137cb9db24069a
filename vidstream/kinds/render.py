"""The render kind: a finished job's video rendered again with subtitles from its transcript as
its user corrected it, without transcribing again.

The request names the job (the tenant's, completed, its source still stored and with a picture)
and brings the corrected transcript: its JSON in the request, or an uploaded JSON, SRT or WebVTT
file. All of it is checked before the job is queued. The corrected transcript is stored as an
upload the job owns (deleted with it), in the form the render stage reads: a transcript whose
segments say what the user wrote (words that no longer say their segment's text are dropped and
the text is spread over the segment's time; SRT and WebVTT cues become segments).

Its source stays where the original job keeps it: the render job does not own it
(`owns_source=False`), so its own removal leaves it alone, and the original job, which owns it,
is kept (`JobStore.keep`) for at least JOB_RETENTION_S from the render job's creation, and again
from the start of each of its runs. Only a render job left queued longer than that finds its
source gone (`source_not_found`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

from vidstream.compose.caption_style import CaptionFields
from vidstream.core.errors import ObjectNotFound, PermanentError
from vidstream.job.kinds import KINDS, RenderOptions, RenderRequest
from vidstream.job.model import Job, Stage, Status, is_job_id
from vidstream.kinds.base import Draft, Incoming, KindHandler, StageRun, Tools
from vidstream.kinds.burning import burn_piece
from vidstream.kinds.subtitle import subtitled
from vidstream.kinds.transcribing import store_transcript
from vidstream.media import captions
from vidstream.media.transcript import Segment, Transcript
from vidstream.services import Services
from vidstream.state.budget import cleanup
from vidstream.state.tickets import Ticket, Tickets
from vidstream.storage.names import check_source_key, new_upload_key

CAPTIONS_MAX_BYTES = captions.MAX_BYTES  # an uploaded file; a request's JSON is at most 1 MiB
CORRECTED_MAX_BYTES = 16 * 1024 * 1024  # the stored transcript the render stage reads
STORED_TICKET_S = 300  # the stored transcript is abandoned this long after, if no job took it


# -- intake: at the gateway, before anything is queued ------------------------------------------


async def intake(incoming: Incoming, request: RenderRequest) -> Draft:
    services, tenant = incoming.services, incoming.tenant
    if (request.transcript is None) == (request.captions is None):
        raise _invalid(
            'Give the corrected transcript once: "transcript" (its JSON), or "captions" '
            '({"key": ...} of an uploaded JSON, SRT or WebVTT file).'
        )
    if request.transcript is not None and not isinstance(request.transcript, dict):
        raise _invalid("transcript must be the transcript's JSON object")
    named, owner = await _source_owner(services, tenant, request.job)
    await incoming.refuse_if_paused()  # before its upload is taken
    tickets = Tickets(services.redis, services.keys)
    taken: list[str] = []
    try:
        if request.captions is not None:
            key = check_source_key(request.captions.key)
            if await tickets.take(key, tenant, incoming.job_id) is None:
                raise PermanentError(f"No upload of yours (unused by another job) is at "
                                     f"{key[:80]!r}.", code="source_not_found")  # fmt: skip
            taken.append(key)
            raw = await _uploaded(services, key)
        else:
            raw = json.dumps(request.transcript).encode()
        transcript = await asyncio.to_thread(corrected, raw)
        stored = await _store(services, tickets, tenant, incoming.job_id, transcript)
    except BaseException:
        await asyncio.shield(cleanup(tickets.give_back_all(taken, incoming.job_id)))
        raise
    # What the request leaves out is as the job it corrects had it: its captions' look and
    # layout, burnt in or not, its files, its language.
    given, before = request.model_fields_set, named.options
    options = RenderOptions(
        # (a translated job's captions are English: corrected, they still are)
        language=request.language if "language" in given else before.written_in,
        burn_subtitles=request.burn_subtitles if "burn_subtitles" in given
        else before.burn_subtitles,
        formats=request.formats if "formats" in given else before.formats, job=owner.id,
        captions=request.caption_style() if given & set(CaptionFields.model_fields)
        else before.captions,
    )  # fmt: skip
    return Draft(owner.source_key, options, owner.source_name, assets=(stored, *taken))


async def _source_owner(services: Services, tenant: str, job_id: str) -> tuple[Job, Job]:
    """The finished job `job_id`, and the one whose source a request for it renders again: that
    job, or (when it is itself a render job) the job whose source it rendered."""
    named = await _finished(services, tenant, job_id)
    owner = named
    if isinstance(named.options, RenderOptions) and named.options.job:
        owner = await _finished(services, tenant, named.options.job)
    video = KINDS[owner.kind].from_video  # (a compose job's source is one of its clips)
    if not video or not owner.source_key or (owner.media and not owner.media.has_video):
        raise _invalid(f"The job {job_id} has no video of its own to render subtitles onto.")
    # Kept first, then looked for: once kept, retention leaves its source alone while this job
    # waits in the queue; a job already due for removal is not kept (its files may be going).
    kept = await services.jobs.keep(owner.id, time.time() + services.jobs.ttl_s)
    if not kept or await services.store.head(owner.source_key) is None:
        raise PermanentError(
            f"The source of job {job_id} is no longer stored.", code="source_not_found"
        )
    return named, owner


async def _finished(services: Services, tenant: str, job_id: str) -> Job:
    job = await services.jobs.get(job_id) if is_job_id(job_id) else None
    if job is None or job.tenant != tenant:  # another tenant's job does not exist
        raise PermanentError(f"No job of yours has the id {job_id[:40]!r}.", code="not_found")
    if job.status is not Status.COMPLETED:
        raise PermanentError(
            f"The job {job_id} is {job.status}; only a completed job can be rendered again.",
            code="conflict",
        )
    return job


async def _uploaded(services: Services, key: str) -> bytes:
    try:
        return await services.store.get_bytes(key, CAPTIONS_MAX_BYTES)
    except ObjectNotFound:
        raise PermanentError(
            "Nothing was uploaded to that key yet.", code="source_not_found"
        ) from None


def corrected(raw: bytes) -> Transcript:
    """The corrected transcript as the render stage reads it (pure): from JSON, each segment
    with its text as given, and its words only while they still say that text; from SRT or
    WebVTT, a segment per cue. `PermanentError(invalid_subtitles)` says what is wrong."""
    found = captions.parse_captions(raw)
    if isinstance(found, Transcript):
        segments = tuple(s if _words_say(s) else replace(s, words=()) for s in found.segments)
        transcript = replace(found, segments=segments)
    else:  # cues: their words are spread over their time when rendered (`subtitles`)
        segments = tuple(Segment(c.start, c.end, c.text) for c in found)
        transcript = Transcript("", max(c.end for c in found), segments)
    if not transcript.text.strip():
        raise PermanentError("The corrected transcript has no text.", code="invalid_subtitles")
    return transcript


def _words_say(segment: Segment) -> bool:
    return " ".join(w.text for w in segment.words) == " ".join(segment.text.split())


async def _store(
    services: Services, tickets: Tickets, tenant: str, job_id: str, transcript: Transcript
) -> str:
    """Store the corrected transcript as an upload, taken for the job: deleted with it, or
    once its ticket lapsed if the job is never created."""
    body = await asyncio.to_thread(transcript.to_json)
    if len(body) > CORRECTED_MAX_BYTES:
        raise PermanentError("The corrected transcript is too large.", code="too_large")
    key = new_upload_key()
    ticket = Ticket(key, tenant, "transcript.json", len(body), "application/json")
    await tickets.issue(ticket, STORED_TICKET_S, margin_s=0)

    async def chunks() -> AsyncIterator[bytes]:
        yield body

    await services.store.put_stream(key, chunks(), "application/json", CORRECTED_MAX_BYTES)
    taken = await tickets.take(key, tenant, job_id)
    assert taken is not None, "a ticket just issued is the tenant's and unused"
    return key


def _invalid(message: str) -> PermanentError:
    return PermanentError(message, code="invalid_request")


# -- the render stage: at a render worker ---------------------------------------------------------


async def render(tools: Tools, job: Job, workdir: Path, run: StageRun) -> None:
    """The corrected transcript's files (as a subtitle job's) and the source subtitled with it."""
    options = job.options
    assert isinstance(options, RenderOptions)
    jobs, store = tools.services.jobs, tools.services.store
    # The owner (and its source) outlives this run, however long it waited or runs.
    await jobs.keep(options.job, time.time() + jobs.ttl_s)
    owner = await jobs.get(options.job)
    if owner is not None and owner.media is not None:  # the same source: no need to probe
        job = job.with_changes(media=owner.media)
    transcript = Transcript.from_json(await store.get_bytes(job.assets[0], CORRECTED_MAX_BYTES))
    size = job.media.display_size if job.media is not None else (0, 0)
    outputs = await store_transcript(job, transcript, workdir, run, size)
    video = await subtitled(tools, job, transcript, workdir, run, job.assets[0])
    await run.finish({**outputs, "video": video}, job.media)


HANDLER = KindHandler(intake, {Stage.RENDER: render}, pieces={Stage.RENDER: burn_piece})
