"""The subtitle and transcribe kinds: a job made from one video. The gateway takes the upload
(by key, or streamed with the request); Whisper transcribes it (`transcribing`); the render
stage burns the subtitles in, or muxes them as a track, and stores the MP4."""

from __future__ import annotations

import asyncio
from pathlib import Path

from vidstream.core.errors import TransientError
from vidstream.job.kinds import FromVideo
from vidstream.job.model import Job, Output, Stage
from vidstream.job.options import Options
from vidstream.job.protocol import Intake
from vidstream.kinds import burning
from vidstream.kinds.base import (
    Draft,
    Incoming,
    KindHandler,
    StageRun,
    Tools,
    burnt_captions,
    layout_of,
    speech_model,
)
from vidstream.kinds.encode import run_ffmpeg
from vidstream.kinds.sources import source_path
from vidstream.kinds.transcribing import transcribe, transcribe_piece
from vidstream.media import ffmpeg, fonts
from vidstream.media.info import MediaInfo, run_timeout
from vidstream.media.probe import probe
from vidstream.media.subtitles import build_cues, to_srt
from vidstream.media.transcript import Transcript
from vidstream.media.voices import check_speakers
from vidstream.storage.names import check_source_key, rendered_key

OUTPUT = "output.mp4"


async def intake(incoming: Incoming, request: FromVideo) -> Draft:
    options = Options(language=request.language, burn_subtitles=request.burn_subtitles,
                      formats=request.formats, model=request.model, task=request.task,
                      speakers=request.speakers, captions=request.caption_style())  # fmt: skip
    speech_model(incoming.services.settings, options)
    check_speakers(options.speakers)
    if incoming.upload is not None:  # streamed with the request: stored, its ticket issued
        upload = incoming.upload
        return Draft(upload.key, options, upload.filename, found=Intake.OK)
    key = check_source_key(request.source.key)
    # Checked before the ticket is (in the step that creates the job), but told only to the
    # tenant the upload is for.
    services = incoming.services
    info = await services.store.head(key)
    found = Intake.MISSING if info is None else Intake.OK
    if info is not None and info.size > services.settings.max_upload_bytes:
        found = Intake.TOO_LARGE
    return Draft(key, options, found=found)


async def render(tools: Tools, job: Job, workdir: Path, run: StageRun) -> None:
    """The video with the transcript's subtitles, stored as the job's `video`."""
    if "transcript" not in job.outputs:
        raise TransientError("the transcript is not stored yet", code="stage_out_of_order")
    store = tools.services.store
    raw = await store.get_bytes(job.outputs["transcript"].key)
    transcript = Transcript.from_json(raw)
    video = await subtitled(tools, job, transcript, workdir, run, job.outputs["transcript"].key)
    await run.finish({"video": video})


async def subtitled(
    tools: Tools, job: Job, transcript: Transcript, workdir: Path, run: StageRun, stored: str
) -> Output:
    """The job's source with `transcript` (stored at `stored`) burnt in
    (or as a track, as its options say), stored under the run's own name: the finish makes it
    the job's video only if this run still holds the stage (`actors.outputs`); otherwise it is
    deleted, never written over another."""
    s = tools.services.settings
    source = await source_path(
        tools.services.store, job, workdir, s.max_upload_bytes, tools.downloads
    )
    media = job.media or await probe(
        source, s.probe_timeout_s, max_pixels=s.max_pixels, max_duration_s=s.max_duration_s
    )
    joined = None
    if burning.wanted(tools, job, media):
        joined = await burning.burn_in_pieces(tools, job, source, media, stored, workdir, run)
    if joined is None:
        argv = await _command(tools, job, source, media, transcript, workdir)
        duration = min(media.duration, s.max_duration_s)
        await run_ffmpeg(
            argv, workdir, duration_s=media.duration,
            deadline_s=run_timeout(duration, s.media_timeout_factor),
            report=run.report, log=run.log,
        )  # fmt: skip
    assert run.objects is not None
    key = rendered_key(job.id, run.tag, job.created_at)
    return await run.objects.put(key, workdir / OUTPUT, "video/mp4")


async def _command(
    tools: Tools, job: Job, source: Path, media: MediaInfo, transcript: Transcript, workdir: Path
) -> list[str]:
    if job.options.burn_subtitles:
        width, height = media.display_size
        document = await asyncio.to_thread(  # a long transcript's: seconds, off the loop
            burnt_captions, job.options, transcript, width, height
        )
        await asyncio.to_thread((workdir / "subs.ass").write_text, document)
        await asyncio.to_thread(fonts.link, workdir, [job.options.captions.faces()])
        return ffmpeg.burn_subtitles(
            tools.ffmpeg, str(source), "subs.ass", OUTPUT, media, tools.encoder, tools.bounds
        )
    srt, cues = None, await asyncio.to_thread(build_cues, transcript, layout_of(job.options))
    if cues:  # nothing said: no subtitle track (FFmpeg refuses an empty SRT file)
        srt = "subs.srt"
        await asyncio.to_thread((workdir / srt).write_text, to_srt(cues))
    return ffmpeg.soft_subtitles(
        tools.ffmpeg, str(source), srt, OUTPUT, media, tools.encoder, job.options.written_in,
        tools.bounds,
    )  # fmt: skip


HANDLER = KindHandler(
    intake,
    {Stage.TRANSCRIBE: transcribe, Stage.RENDER: render},
    pieces={Stage.TRANSCRIBE: transcribe_piece, Stage.RENDER: burning.burn_piece},
)
