"""The render role: a worker holding FFmpeg and the encoder's settings, running each job's
render stage as its kind declares it (burnt-in subtitles, a composed timeline, ...)."""

from __future__ import annotations

from pathlib import Path

from vidstream import kinds
from vidstream.actors.run import Run
from vidstream.actors.worker import Worker
from vidstream.job.model import Job, Stage
from vidstream.kinds.base import Tools
from vidstream.kinds.sources import Downloads
from vidstream.media import ffmpeg
from vidstream.services import Services


class RenderWorker(Worker):
    stage = Stage.RENDER
    tools: Tools

    def __init__(
        self, services: Services, *, concurrency: int = 1, name: str | None = None
    ) -> None:
        super().__init__(services, concurrency=concurrency, name=name)
        s = self.settings
        self.tools = Tools(
            services,
            ffmpeg.resolve_binary(s.ffmpeg),
            ffmpeg.Encoder(preset=s.x264_preset, crf=s.x264_crf),
            # Whatever the source's header says: no larger picture is decoded, no longer video made.
            ffmpeg.Bounds(s.max_pixels, s.max_duration_s),
            concurrency,
            downloads=Downloads(lambda: self.tmp_root, keep=concurrency + 1),
        )

    async def setup(self) -> None:
        kinds.load_all()

    async def process(self, job: Job, workdir: Path, run: Run) -> None:
        await kinds.stage_work(job.kind, self.stage)(self.tools, job, workdir, run)
