"""The transcribe stage, the same for every kind that has one: probe the source, run Whisper
over it a range at a time, store the transcript (JSON, and SRT and VTT when asked)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from vidstream.core.errors import TooLong
from vidstream.job.model import Job, Output, Stage
from vidstream.job.pipelines import pipeline_of
from vidstream.kinds.base import PieceRun, StageRun, Tools, burnt_captions, layout_of
from vidstream.kinds.fanout import fan_out, fans_out
from vidstream.kinds.sources import source_path
from vidstream.media import scan
from vidstream.media.captions import word_cues
from vidstream.media.cuts import Piece, speech_cuts, unpaused
from vidstream.media.info import MediaInfo, run_timeout, spoken
from vidstream.media.probe import probe
from vidstream.media.progress import segment_fraction
from vidstream.media.seams import merge_transcripts
from vidstream.media.speakers import diarized
from vidstream.media.subtitles import to_srt, to_vtt
from vidstream.media.transcript import Segment, Transcript
from vidstream.media.whisper import DiarizeRequest, TranscribeRequest, WhisperPool
from vidstream.storage.names import CONTENT_TYPES, transcript_key


def next_range(start: float, size: float, limit_s: float) -> tuple[float, bool]:
    """The end of the range from `start`: at most `size` seconds, never past `limit_s`; and
    whether it ends at the limit (sound going on past it is too long)."""
    end = min(start + size, limit_s)
    return end, end >= limit_s


def expected_sound(start: float, end: float, duration: float) -> float:
    """Seconds of sound a range should hold, by the probed `duration`; all of it once the
    sound has gone on past what the header said."""
    return (min(end, duration) if duration > start else end) - start


async def transcribe(tools: Tools, job: Job, workdir: Path, run: StageRun) -> None:
    """The stage's work: the transcript stored, the job handed on with its media info."""
    s, store = tools.services.settings, tools.services.store
    assert tools.whisper is not None, "the transcribe stage runs where Whisper does"
    source = await source_path(store, job, workdir, s.max_upload_bytes, tools.downloads)
    media = await probe(
        source, s.probe_timeout_s, max_pixels=s.max_pixels, max_duration_s=s.max_duration_s,
        need_video=pipeline_of(job).needs_picture,
    )  # fmt: skip

    async def on_segment(segment: Segment) -> None:
        await run.report(segment_fraction(segment.end, 0.0, media.duration))

    started = time.monotonic()
    transcript = None
    if fans_out(s, media.duration):
        transcript = await _in_pieces(tools, job, source, media, workdir, run)
    if transcript is None:
        pool = await tools.whisper.pool(job.options.model)
        transcript = await _ranges(tools, pool, job, source, media, on_segment, run.log)
    if job.options.speakers is not None:  # after any fan-out: one numbering for the whole source
        pool = await tools.whisper.pool(job.options.model)
        transcript = await _told_apart(tools, pool, job, source, media, transcript, run)
    if transcript.duration > 0:
        rtf = (time.monotonic() - started) / transcript.duration
        tools.services.metrics.whisper_rtf.observe(rtf)
    if transcript.duration > media.duration:  # it played longer than its header said
        media = dataclasses.replace(media, duration=transcript.duration)
    outputs = await store_transcript(job, transcript, workdir, run, media.display_size)
    # Finished, and handed on to the next stage of the job's pipeline in the same step.
    await run.finish(outputs, media)


async def _told_apart(
    tools: Tools, pool: WhisperPool, job: Job, source: Path, media: MediaInfo,
    transcript: Transcript, run: StageRun,
) -> Transcript:  # fmt: skip
    """The transcript with who says each word (`media.speakers`), told apart on a Whisper
    server: the whole source at once, so a speaker keeps one number throughout."""
    words = tuple((w.start, w.end) for seg in transcript.segments for w in seg.words)
    if not words:
        return transcript
    s = tools.services.settings
    asked = job.options.speakers or 0
    request = DiarizeRequest(
        source, media.demuxer, words, asked, duration=media.duration, range_s=s.whisper_range_s,
        timeout_s=run_timeout(media.duration, s.media_timeout_factor),
    )  # fmt: skip
    return diarized(transcript, await pool.diarize(request, run.log))


async def _ranges(
    tools: Tools,
    pool: WhisperPool,
    job: Job,
    source: Path,
    media: MediaInfo,
    on_segment: Callable[[Segment], Awaitable[None]],
    log: structlog.stdlib.BoundLogger,
    start: float = 0.0,
    until: float | None = None,
) -> Transcript:
    """Whisper over the source from `start` one range at a time, so a server holds at most one
    range of audio (20 min by default, about 77 MB) whatever the video's length. Ranges follow
    one another while the sound goes on, up to MAX_DURATION_S (or `until`, a piece's end): what
    is decoded decides how long a source is, not what its header says."""
    s = tools.services.settings
    parts: list[Transcript] = []
    limit = s.max_duration_s if until is None else min(until, s.max_duration_s)
    while True:
        end, last = next_range(start, s.whisper_range_s, limit)
        last = last and until is None  # a piece's end is not the source's
        timeout_s = run_timeout(expected_sound(start, end, media.duration), s.media_timeout_factor)
        request = TranscribeRequest(
            source, media.demuxer, job.options.language, start, end,
            duration=media.duration, last=last, timeout_s=timeout_s, task=job.options.task,
        )  # fmt: skip
        heard = await pool.transcribe(request, on_segment, log)
        parts.append(heard.transcript)
        if not heard.more or (until is not None and end >= limit):
            break
        if last:  # the server refuses this itself; never loop on a range of nothing
            raise TooLong(f"The video plays on past {spoken(end)}, the longest accepted.")
        start = end
    return Transcript(
        language=parts[0].language,
        duration=max(media.duration if until is None else 0.0, start + parts[-1].duration),
        segments=tuple(seg for part in parts for seg in part.segments),
        model=parts[0].model,
    )


async def _in_pieces(
    tools: Tools, job: Job, source: Path, media: MediaInfo, workdir: Path, run: StageRun
) -> Transcript | None:
    """The transcript of a long source, its pieces cut in pauses and transcribed by every
    transcribe worker at once (`fanout`); None if it cannot be cut."""
    s = tools.services.settings

    async def cut() -> list[Piece]:
        timeout_s = run_timeout(media.duration / 20, s.media_timeout_factor)
        found = await scan.pauses(tools.ffmpeg, source, media.demuxer, media.duration, timeout_s)
        quiet = {
            k: await scan.quietest_moment(tools.ffmpeg, source, media.demuxer, span, timeout_s)
            for k, span in unpaused(media.duration, s.piece_s, found).items()
        }
        run.log.info("pauses_found", pauses=len(found), cuts_without_pause=len(quiet))
        return speech_cuts(media.duration, s.piece_s, found, quiet)

    # Joining the pieces' transcripts takes little: the pieces are nearly all of the stage.
    # The probe's answer goes with the plan: a piece's worker does not probe the source again.
    done = await fan_out(tools, job, run, Stage.TRANSCRIBE, cut, transcribe_piece, workdir,
                         share=(0.0, 0.99), context={"media": media.to_dict()})  # fmt: skip
    if done is None:
        return None
    plan, results = done

    def join() -> Transcript:  # every piece's words, parsed and aligned: off the loop
        parts = [(piece, Transcript.from_json(raw))
                 for piece, raw in zip(plan.pieces, results, strict=True)]  # fmt: skip
        return merge_transcripts(parts, media.duration)

    return await asyncio.to_thread(join)


async def transcribe_piece(tools: Tools, job: Job, run: PieceRun) -> str:
    """One piece of a fanned-out transcription (any transcribe worker's): its transcript, times
    from the start of the source, as JSON."""
    s, store = tools.services.settings, tools.services.store
    piece, workdir = run.piece, run.workdir
    assert tools.whisper is not None, "the transcribe stage runs where Whisper does"
    source = await source_path(store, job, workdir, s.max_upload_bytes, tools.downloads)
    media = MediaInfo.from_dict(run.context["media"])  # as the stage's run probed it

    async def on_segment(segment: Segment) -> None:
        await run.report(segment_fraction(segment.end, piece.start, piece.end))

    until = None if piece.last else piece.end
    pool = await tools.whisper.pool(job.options.model)
    heard = await _ranges(tools, pool, job, source, media, on_segment, run.log,
                          start=piece.start, until=until)  # fmt: skip
    return heard.to_json().decode()


def _documents(
    job: Job, transcript: Transcript, picture: tuple[int, int]
) -> dict[str, tuple[str, bytes]]:
    """Each file of the transcript the job's formats ask for: its format and its bytes."""
    items = word_cues(transcript, layout_of(job.options))  # laid out once, for every format
    cues = [cue for cue, _ in items]
    documents = {"transcript": ("json", transcript.to_json())}
    formats = job.options.formats
    if "srt" in formats:
        documents["srt"] = ("srt", to_srt(cues).encode())
    if "vtt" in formats:
        documents["vtt"] = ("vtt", to_vtt(cues).encode())
    if "ass" in formats:
        width, height = picture if all(picture) else (1920, 1080)
        document = burnt_captions(job.options, items, width, height)
        documents["ass"] = ("ass", document.encode())
    if "txt" in formats:
        documents["txt"] = ("txt", (transcript.text + "\n").encode())
    return documents


async def store_transcript(
    job: Job, transcript: Transcript, workdir: Path, run: StageRun,
    picture: tuple[int, int] = (0, 0),
) -> dict[str, Output]:  # fmt: skip
    """The transcript's files (JSON always; SRT, VTT, ASS, plain text as the job's formats ask),
    under the run's own names (`actors.outputs`). The ASS file is laid out for the source's
    `picture` (width, height; 1080p for a source of sound alone), as a burn would draw it."""
    assert run.objects is not None
    objects = run.objects
    # In a thread: laying out an hour's captions is seconds of CPU the loop (and the leases it
    # renews) must not wait for.
    documents = await asyncio.to_thread(_documents, job, transcript, picture)

    async def put(name: str, fmt: str, body: bytes) -> tuple[str, Output]:
        path = workdir / f"transcript.{fmt}"
        await asyncio.to_thread(path.write_bytes, body)
        key = transcript_key(job.id, fmt, run.tag)
        return name, await objects.put(key, path, CONTENT_TYPES[fmt])

    stored = await asyncio.gather(*(put(n, f, b) for n, (f, b) in documents.items()))
    return dict(stored)
