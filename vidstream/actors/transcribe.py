"""The transcribe stage: probe the source, run Whisper, store the transcript (JSON, SRT, VTT)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from vidstream.actors.run import Run
from vidstream.actors.sources import source_path
from vidstream.actors.worker import Worker
from vidstream.core.errors import TooLong
from vidstream.job.model import Job, Output, Stage
from vidstream.job.pipelines import pipeline_of
from vidstream.media import ffmpeg
from vidstream.media.info import MediaInfo, run_timeout, spoken
from vidstream.media.probe import probe
from vidstream.media.progress import segment_fraction
from vidstream.media.subtitles import build_cues, to_srt, to_vtt
from vidstream.media.transcript import Segment, Transcript
from vidstream.media.whisper import TranscribeRequest, WhisperConfig, WhisperPool
from vidstream.services import Services
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
        s = self.settings
        source = await source_path(self.store, job, workdir, s.max_upload_bytes)
        media = await probe(
            source, s.probe_timeout_s, max_pixels=s.max_pixels, max_duration_s=s.max_duration_s,
            need_video=pipeline_of(job).needs_picture,
        )  # fmt: skip

        async def on_segment(segment: Segment) -> None:
            await run.report(segment_fraction(segment.end, 0.0, media.duration))

        started = time.monotonic()
        transcript = await self._transcribe(job, source, media, on_segment, run)
        if transcript.duration > 0:
            rtf = (time.monotonic() - started) / transcript.duration
            self.services.metrics.whisper_rtf.observe(rtf)
        if transcript.duration > media.duration:  # it played longer than its header said
            media = dataclasses.replace(media, duration=transcript.duration)
        outputs = await self._store(job, transcript, workdir, run)
        # Finished, and handed on to the next stage of the job's pipeline in the same step.
        await run.finish(outputs, media)

    async def _transcribe(
        self,
        job: Job,
        source: Path,
        media: MediaInfo,
        on_segment: Callable[[Segment], Awaitable[None]],
        run: Run,
    ) -> Transcript:
        """Whisper over the source one range at a time, so a server holds at most one range
        of audio (20 min by default, about 77 MB) whatever the video's length. Ranges follow
        one another while the sound goes on, up to MAX_DURATION_S: what is decoded decides how
        long a source is, not what its header says."""
        s = self.settings
        parts: list[Transcript] = []
        start = 0.0
        while True:
            end, last = next_range(start, s.whisper_range_s, s.max_duration_s)
            timeout_s = run_timeout(
                expected_sound(start, end, media.duration), s.media_timeout_factor
            )
            request = TranscribeRequest(
                source, media.demuxer, job.options.language, start, end,
                duration=media.duration, last=last, timeout_s=timeout_s,
            )  # fmt: skip
            heard = await self.pool.transcribe(request, on_segment, run.log)
            parts.append(heard.transcript)
            if not heard.more:
                break
            if last:  # the server refuses this itself; never loop on a range of nothing
                raise TooLong(f"The video plays on past {spoken(end)}, the longest accepted.")
            start = end
        return Transcript(
            language=parts[0].language,
            duration=max(media.duration, start + parts[-1].duration),
            segments=tuple(seg for part in parts for seg in part.segments),
            model=parts[0].model,
        )

    async def _store(
        self, job: Job, transcript: Transcript, workdir: Path, run: Run
    ) -> dict[str, Output]:
        """The transcript's files, under the run's own names (`actors.outputs`)."""
        assert run.objects is not None
        objects = run.objects
        cues = build_cues(transcript)
        documents = {"transcript": ("json", transcript.to_json())}
        if "srt" in job.options.formats:
            documents["srt"] = ("srt", to_srt(cues).encode())
        if "vtt" in job.options.formats:
            documents["vtt"] = ("vtt", to_vtt(cues).encode())

        async def put(name: str, fmt: str, body: bytes) -> tuple[str, Output]:
            path = workdir / f"transcript.{fmt}"
            await asyncio.to_thread(path.write_bytes, body)
            key = transcript_key(job.id, fmt, run.tag)
            return name, await objects.put(key, path, CONTENT_TYPES[fmt])

        stored = await asyncio.gather(*(put(n, f, b) for n, (f, b) in documents.items()))
        return dict(stored)
