"""The transcribe role: a worker holding a pool of Whisper servers per model, running each job's
transcribe stage as its kind declares it (`kinds.transcribing` for every kind so far)."""

from __future__ import annotations

from pathlib import Path

from vidstream import kinds
from vidstream.actors.run import Run
from vidstream.actors.worker import Worker
from vidstream.job.model import Job, Stage
from vidstream.kinds.base import Tools
from vidstream.kinds.sources import Downloads
from vidstream.media import ffmpeg
from vidstream.media.models import catalogue
from vidstream.media.whisper import WhisperConfig
from vidstream.media.whispers import Whispers
from vidstream.services import Services


class TranscribeWorker(Worker):
    stage = Stage.TRANSCRIBE
    tools: Tools

    def __init__(
        self, services: Services, *, concurrency: int = 1, name: str | None = None
    ) -> None:
        super().__init__(services, concurrency=concurrency, name=name)
        s = self.settings
        binary = ffmpeg.resolve_binary(s.ffmpeg)
        self.pool = Whispers(
            WhisperConfig(
                ffmpeg=binary,
                threads=s.whisper_threads,
                beam_size=s.whisper_beam_size,
                vad=s.whisper_vad,
                load_timeout_s=s.whisper_load_timeout_s,
            ),
            catalogue(s.whisper_model, s.whisper_models_dir),
            size=concurrency,
        )
        self.tools = Tools(
            services, binary, ffmpeg.Encoder(preset=s.x264_preset, crf=s.x264_crf),
            ffmpeg.Bounds(s.max_pixels, s.max_duration_s), concurrency, whisper=self.pool,
            downloads=Downloads(lambda: self.tmp_root, keep=concurrency + 1),
        )  # fmt: skip

    async def setup(self) -> None:
        kinds.load_all()
        await self.pool.start()

    async def teardown(self) -> None:
        await self.pool.close()

    async def process(self, job: Job, workdir: Path, run: Run) -> None:
        await kinds.stage_work(job.kind, self.stage)(self.tools, job, workdir, run)
