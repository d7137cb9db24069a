"""The transcribe stage: probe the source, run Whisper, store the transcript (JSON, SRT, VTT)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from pathlib import Path

from vidstream.actors.run import Run
from vidstream.actors.sources import source_path
from vidstream.actors.worker import Worker
from vidstream.errors import TooLong
from vidstream.jobs import Job, Output, Stage
from vidstream.media import ffmpeg
from vidstream.media.probe import probe
from vidstream.media.progress import segment_fraction
from vidstream.media.subtitles import build_cues, to_srt, to_vtt
from vidstream.media.transcript import Segment, Transcript
from vidstream.media.whisper import TranscribeRequest, WhisperConfig, WhisperPool
from vidstream.services import Services
from vidstream.storage.names import CONTENT_TYPES, transcript_key


def ranges(duration: float, size: float) -> list[tuple[float, float | None]]:
    """[start, end) ranges of at most `size` seconds covering `duration`; the last is open."""
    count = max(1, math.ceil(duration / size - 0.01))  # no sliver range for a rounding error
    return [(i * size, (i + 1) * size if i + 1 < count else None) for i in range(count)]


class TranscribeWorker(Worker):
    stage = Stage.TRANSCRIBE

    def __init__(
        self, services: Services, *, concurrency: int = 1, name: str | None = None
    ) -> None:
        super().__init__(services, concurrency=concurrency, name=name)
        s = self.settings
        threads = s.whisper_threads
        self.pool = WhisperPool(
            WhisperConfig(
                ffmpeg=ffmpeg.resolve_binary(s.ffmpeg),
                model=s.whisper_model,
                threads=threads,
                beam_size=s.whisper_beam_size,
                load_timeout_s=s.whisper_load_timeout_s,
            ),
            size=concurrency,
        )

    async def setup(self) -> None:
        await self.pool.start()

    async def teardown(self) -> None:
        await self.pool.close()

    async def process(self, job: Job, workdir: Path, run: Run) -> None:
        source = await source_path(self.store, job, workdir)
        media = await probe(source, self.settings.probe_timeout_s)
        if media.duration > self.settings.max_duration_s:
            raise TooLong(
                f"The video is {media.duration / 60:.1f} minutes long; the limit is "
                f"{self.settings.max_duration_s / 60:.1f} minutes."
            )

        async def on_segment(segment: Segment) -> None:
            await run.report(segment_fraction(segment.end, 0.0, media.duration))

        transcript = await self._transcribe(job, source, media.duration, on_segment)
        outputs = await self._store(job, transcript, workdir)
        # Finished, and handed on to the next stage of the job's pipeline in the same step.
        await run.finish(outputs, media)

    async def _transcribe(
        self,
        job: Job,
        source: Path,
        duration: float,
        on_segment: Callable[[Segment], Awaitable[None]],
    ) -> Transcript:
        """Whisper over the source one range at a time, so a server holds at most one range
        of audio (20 min by default, about 77 MB) whatever the video's length."""
        parts: list[Transcript] = []
        for start, end in ranges(duration, self.settings.whisper_range_s):
            request = TranscribeRequest(source, job.options.language, start, end, duration)
            parts.append(await self.pool.transcribe(request, on_segment))
        return Transcript(
            language=parts[0].language,
            duration=duration,
            segments=tuple(s for part in parts for s in part.segments),
            model=parts[0].model,
        )

    async def _store(self, job: Job, transcript: Transcript, workdir: Path) -> dict[str, Output]:
        cues = build_cues(transcript)
        documents = {"transcript": ("json", transcript.to_json())}
        if "srt" in job.options.formats:
            documents["srt"] = ("srt", to_srt(cues).encode())
        if "vtt" in job.options.formats:
            documents["vtt"] = ("vtt", to_vtt(cues).encode())

        async def put(name: str, fmt: str, body: bytes) -> tuple[str, Output]:
            path = workdir / f"transcript.{fmt}"
            await asyncio.to_thread(path.write_bytes, body)
            info = await self.store.put_file(transcript_key(job.id, fmt), path, CONTENT_TYPES[fmt])
            return name, Output(info.key, info.size, info.content_type)

        stored = await asyncio.gather(*(put(n, f, b) for n, (f, b) in documents.items()))
        return dict(stored)
