"""The render stage: FFmpeg burns the subtitles in (or muxes a soft track) and stores the MP4;
for a compose job, renders its timeline (`actors.compose`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from vidstream.actors.compose import Composer
from vidstream.actors.encode import run_ffmpeg
from vidstream.actors.run import Run
from vidstream.actors.sources import source_path
from vidstream.actors.worker import Worker
from vidstream.core.errors import TransientError
from vidstream.job.model import Job, Kind, Stage
from vidstream.media import ffmpeg, fonts
from vidstream.media.info import MediaInfo, run_timeout
from vidstream.media.probe import probe
from vidstream.media.subtitles import FONT, Cue, build_cues, to_ass, to_srt
from vidstream.media.transcript import Transcript
from vidstream.services import Services
from vidstream.storage.names import rendered_key

OUTPUT = "output.mp4"


class RenderWorker(Worker):
    stage = Stage.RENDER

    def __init__(
        self, services: Services, *, concurrency: int = 1, name: str | None = None
    ) -> None:
        super().__init__(services, concurrency=concurrency, name=name)
        self.ffmpeg = ffmpeg.resolve_binary(self.settings.ffmpeg)
        self.encoder = ffmpeg.Encoder(preset=self.settings.x264_preset, crf=self.settings.x264_crf)
        # Whatever the source's header says: no larger picture is decoded, no longer video made.
        self.bounds = ffmpeg.Bounds(self.settings.max_pixels, self.settings.max_duration_s)
        self.composer = Composer(services, ffmpeg=self.ffmpeg, encoder=self.encoder,
                                 concurrency=concurrency)  # fmt: skip

    async def process(self, job: Job, workdir: Path, run: Run) -> None:
        if job.kind is Kind.COMPOSE:
            await self.composer.process(job, workdir, run)
            return
        if "transcript" not in job.outputs:
            raise TransientError("the transcript is not stored yet", code="stage_out_of_order")
        s = self.settings
        source = await source_path(self.store, job, workdir, s.max_upload_bytes)
        media = job.media or await probe(
            source, s.probe_timeout_s, max_pixels=s.max_pixels, max_duration_s=s.max_duration_s
        )
        raw = await self.store.get_bytes(job.outputs["transcript"].key)
        cues = build_cues(Transcript.from_json(raw))
        argv = await self._command(job, source, media, cues, workdir)
        await self._run(job, run, argv, workdir, media)
        # Under the run's own name: the finish makes it the job's video only if this run still
        # holds the stage (`actors.outputs`); otherwise it is deleted, never written over another.
        assert run.objects is not None
        key = rendered_key(job.id, run.tag, job.created_at)
        video = await run.objects.put(key, workdir / OUTPUT, "video/mp4")
        await run.finish({"video": video})

    async def _command(
        self, job: Job, source: Path, media: MediaInfo, cues: list[Cue], workdir: Path
    ) -> list[str]:
        if job.options.burn_subtitles:
            width, height = media.display_size
            await asyncio.to_thread((workdir / "subs.ass").write_text, to_ass(cues, width, height))
            await asyncio.to_thread(fonts.link, workdir, [(FONT, False)])
            return ffmpeg.burn_subtitles(
                self.ffmpeg, str(source), "subs.ass", OUTPUT, media, self.encoder, self.bounds
            )
        srt = None
        if cues:  # nothing said: no subtitle track (FFmpeg refuses an empty SRT file)
            srt = "subs.srt"
            await asyncio.to_thread((workdir / srt).write_text, to_srt(cues))
        return ffmpeg.soft_subtitles(
            self.ffmpeg, str(source), srt, OUTPUT, media, self.encoder, job.options.language,
            self.bounds,
        )  # fmt: skip

    async def _run(
        self, job: Job, run: Run, argv: list[str], workdir: Path, media: MediaInfo
    ) -> None:
        """Run FFmpeg within a deadline that follows from the video's duration."""
        duration = min(media.duration, self.settings.max_duration_s)
        await run_ffmpeg(
            argv, workdir, duration_s=media.duration,
            deadline_s=run_timeout(duration, self.settings.media_timeout_factor),
            report=run.report, log=run.log,
        )  # fmt: skip
