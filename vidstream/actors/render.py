"""The render stage: FFmpeg burns the subtitles in (or muxes a soft track) and stores the MP4."""

from __future__ import annotations

import asyncio
from pathlib import Path

from vidstream import process
from vidstream.actors.run import Run
from vidstream.actors.sources import source_path
from vidstream.actors.worker import Worker
from vidstream.errors import JobCancelled, TransientError
from vidstream.jobs import Job, Output, Stage
from vidstream.media import ffmpeg
from vidstream.media.info import MediaInfo
from vidstream.media.probe import probe
from vidstream.media.progress import FfmpegProgress
from vidstream.media.subtitles import Cue, build_cues, to_ass, to_srt
from vidstream.media.transcript import Transcript
from vidstream.services import Services
from vidstream.storage.names import rendered_key

OUTPUT = "output.mp4"
STALL_TIMEOUT_S = 300.0  # FFmpeg reports progress twice a second; silence this long is a hang


class RenderWorker(Worker):
    stage = Stage.RENDER

    def __init__(
        self, services: Services, *, concurrency: int = 1, name: str | None = None
    ) -> None:
        super().__init__(services, concurrency=concurrency, name=name)
        self.ffmpeg = ffmpeg.resolve_binary(self.settings.ffmpeg)
        self.encoder = ffmpeg.Encoder(preset=self.settings.x264_preset, crf=self.settings.x264_crf)

    async def process(self, job: Job, workdir: Path, run: Run) -> None:
        if "transcript" not in job.outputs:
            raise TransientError("the transcript is not stored yet", code="stage_out_of_order")
        source = await source_path(self.store, job, workdir)
        media = job.media or await probe(source, self.settings.probe_timeout_s)
        raw = await self.store.get_bytes(job.outputs["transcript"].key)
        cues = build_cues(Transcript.from_json(raw))
        argv = await self._command(job, source, media, cues, workdir)
        await self._run(job, run, argv, workdir, media)
        # The key depends on the job only: a run redone after a crash overwrites the same object,
        # so each job has one video however often it was rendered.
        key = rendered_key(job.id, job.created_at)
        info = await self.store.put_file(key, workdir / OUTPUT, "video/mp4")
        try:
            await run.finish({"video": Output(info.key, info.size, info.content_type)})
        except JobCancelled as exc:
            if exc.cancelled:
                await self.store.delete(key)  # cancelled meanwhile: keep nothing
            raise

    async def _command(
        self, job: Job, source: Path, media: MediaInfo, cues: list[Cue], workdir: Path
    ) -> list[str]:
        if job.options.burn_subtitles:
            width, height = media.display_size
            await asyncio.to_thread((workdir / "subs.ass").write_text, to_ass(cues, width, height))
            return ffmpeg.burn_subtitles(
                self.ffmpeg, str(source), "subs.ass", OUTPUT, media, self.encoder
            )
        srt = None
        if cues:  # nothing said: no subtitle track (FFmpeg refuses an empty SRT file)
            srt = "subs.srt"
            await asyncio.to_thread((workdir / srt).write_text, to_srt(cues))
        return ffmpeg.soft_subtitles(
            self.ffmpeg, str(source), srt, OUTPUT, media, self.encoder, job.options.language
        )

    async def _run(
        self, job: Job, run: Run, argv: list[str], workdir: Path, media: MediaInfo
    ) -> None:
        progress = FfmpegProgress(media.duration)
        proc = await process.spawn(argv, cwd=workdir)
        stderr = process.Tail(proc.stderr)
        async with process.running(proc):
            assert proc.stdout is not None
            while True:
                try:
                    async with asyncio.timeout(STALL_TIMEOUT_S):
                        line = await proc.stdout.readline()
                except TimeoutError:
                    raise TransientError(
                        f"FFmpeg reported no progress for {STALL_TIMEOUT_S:g} s", code="timeout"
                    ) from None
                if not line:
                    break
                fraction = progress.feed(line.decode(errors="replace"))
                if fraction is not None:
                    await run.report(fraction)
            code = await proc.wait()
        if code != 0:
            detail = (await stderr.text())[-600:] or f"exit status {code}"
            raise TransientError(
                f"FFmpeg could not render the video: {detail}", code="ffmpeg_failed"
            )
