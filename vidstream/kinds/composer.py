"""The render stage of a compose job: fetch and probe the assets, write the captions, run the
graph (`compose.graph`), and store the video, its poster and (when asked, first) a preview.

Only I/O lives here: what to render is decided by the pure `compose` package.
"""

from __future__ import annotations

import asyncio
from fractions import Fraction
from pathlib import Path

import structlog

from vidstream.compose import graph, segments
from vidstream.compose.graph import Asset, Window
from vidstream.compose.timeline import (
    AudioClip,
    ImageClip,
    SubtitlesClip,
    Timeline,
    VideoClip,
    frames,
)
from vidstream.core.errors import PermanentError
from vidstream.core.settings import Settings
from vidstream.job.kinds import ComposeOptions
from vidstream.job.model import Job, Output, Stage, is_job_id
from vidstream.kinds.base import PieceRun, StageRun, Tools
from vidstream.kinds.encode import Report, Share, run_ffmpeg
from vidstream.kinds.fanout import fan_out
from vidstream.kinds.sources import fetched_as, kept_path
from vidstream.media import captions, fonts
from vidstream.media.assets import AssetKind, probe_asset
from vidstream.media.cuts import Piece
from vidstream.media.ffmpeg import Encoder
from vidstream.media.info import run_timeout
from vidstream.media.subtitles import Layout
from vidstream.media.transcript import Transcript
from vidstream.storage.names import CONTENT_TYPES, rendered_key, segment_key

PROBES_AT_ONCE = 4
CAPTIONS_MAX_BYTES = captions.MAX_BYTES
# Shares of the stage's progress: the preview comes first when asked, the poster last.
PREVIEW_SHARE, POSTER_SHARE = 0.15, 0.03


async def compose(tools: Tools, job: Job, workdir: Path, run: StageRun) -> None:
    """The stage's work: the timeline rendered and stored."""
    await Composer(tools).process(job, workdir, run)


class Composer:
    """One compose render, with the render worker's clients and encoder."""

    def __init__(self, tools: Tools) -> None:
        self.settings: Settings = tools.services.settings
        self.store = tools.services.store
        self.jobs = tools.services.jobs
        self.ffmpeg, self.encoder, self.tools = tools.ffmpeg, tools.encoder, tools

    async def process(self, job: Job, workdir: Path, run: StageRun) -> None:
        timeline = Timeline.model_validate_json(job.timeline)
        assets = await self._assets(timeline, workdir)
        await self._captions(job, timeline, workdir)
        # The graphs name the declared font files in the working directory, never a system path.
        await asyncio.to_thread(fonts.link, workdir, graph.faces(timeline))
        # Stored under the run's own names; a run that fails, is cancelled or loses its lease
        # keeps nothing (`actors.outputs`).
        outputs = await self._render(job, timeline, assets, workdir, run)
        await run.finish(outputs)

    async def _render(
        self, job: Job, timeline: Timeline, assets: dict[str, Asset], workdir: Path, run: StageRun
    ) -> dict[str, Output]:
        fmt = timeline.output.format
        base = 0.0

        async def put(part: str, ext: str, path: Path) -> Output:
            assert run.objects is not None
            key = rendered_key(job.id, run.tag, job.created_at, part, ext)
            return await run.objects.put(key, path, CONTENT_TYPES[ext])

        if isinstance(job.options, ComposeOptions) and job.options.preview:
            preview = await self._preview(timeline, assets, workdir, run)
            early = {"preview": await put("-preview", fmt, workdir / preview)}
            await run.publish(PREVIEW_SHARE, early)
            base = PREVIEW_SHARE
        span = 1.0 - base - POSTER_SHARE
        video = await self._video(job, timeline, assets, workdir, run, base, span)
        poster = "poster.jpg"
        at = segments.poster_time(timeline)
        await self._ffmpeg(segments.poster_args(video, at, poster), workdir, 1.0, run.log, None)
        return {
            "video": await put("", fmt, workdir / video),
            "poster": await put("-poster", "jpg", workdir / poster),
        }

    async def _preview(
        self, timeline: Timeline, assets: dict[str, Asset], workdir: Path, run: StageRun
    ) -> str:
        name = f"preview.{timeline.output.format}"
        window = Window(
            scale=segments.preview_scale(timeline), encoder=Encoder("ultrafast", 30, "96k"),
            max_pixels=self.settings.max_pixels,
        )  # fmt: skip
        plan = graph.build(timeline, assets, name, window)
        await self._write(workdir, plan.files)
        share = Share(run.report, [1.0], 0.0, PREVIEW_SHARE)
        await self._ffmpeg(plan.args, workdir, timeline.duration, run.log, share.part(0))
        return name

    async def _video(
        self, job: Job, timeline: Timeline, assets: dict[str, Asset], workdir: Path,
        run: StageRun, base: float, span: float,
    ) -> str:  # fmt: skip
        """The finished video: one FFmpeg, or segments at once joined with the sound."""
        fmt, s = timeline.output.format, self.settings
        name = f"output.{fmt}"
        enc = self.encoder
        total = graph.total_frames(timeline)
        # Segments whenever the video is long enough: every render worker, on any host, may
        # take one (`fanout`), not only this worker's other slots.
        ranges = segments.plan(timeline, total, s.compose_segment_s, parallel=2)
        run.log.info(
            "compose_planned",
            frames=total,
            segments=len(ranges),
            tracks=len(timeline.tracks),
            clips=sum(1 for _ in timeline.clips()),
        )
        if len(ranges) == 1:
            plan = graph.build(timeline, assets, name, Window(encoder=enc, max_pixels=s.max_pixels))
            await self._write(workdir, plan.files)
            share = Share(run.report, [1.0], base, span)
            await self._ffmpeg(plan.args, workdir, timeline.duration, run.log, share.part(0))
            return name
        sound = f"sound.{'webm' if fmt == 'webm' else 'm4a'}"
        plan = graph.build(timeline, assets, sound, Window(video=False, encoder=enc))
        await self._write(workdir, plan.files)
        rate = timeline.output.rate

        async def cut() -> list[Piece]:
            return [Piece(i, float(Fraction(first) / rate), float(Fraction(last) / rate),
                          float(Fraction(first) / rate), float(Fraction(last) / rate),
                          frames=last - first, last=i == len(ranges) - 1)
                    for i, (first, last) in enumerate(ranges)]  # fmt: skip

        # The sound is mixed here, whole, while the segments are rendered (it weighs little);
        # either failing stops the other.
        segmented = fan_out(self.tools, job, run, Stage.RENDER, cut, compose_piece, workdir,
                            share=(base, span))  # fmt: skip
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._ffmpeg(plan.args, workdir, timeline.duration, run.log,
                                               None))  # fmt: skip
                pieces = group.create_task(segmented)
        except ExceptionGroup as failed:  # the first error is the job's (`policy` reads it)
            raise failed.exceptions[0] from None
        done = pieces.result()
        assert done is not None
        names = []
        for index, key in enumerate(done[1]):  # in place with local storage, else downloaded
            names.append(await fetched_as(self.store, key, workdir, f"segment-{index}.{fmt}",
                                        s.max_upload_bytes * 4))  # fmt: skip
        await asyncio.to_thread((workdir / "segments.txt").write_text, segments.concat_list(names))
        await self._ffmpeg(segments.join_args("segments.txt", sound, name, fmt), workdir, 1.0,
                           run.log, None)  # fmt: skip
        return name

    async def _ffmpeg(
        self, args: list[str], workdir: Path, seconds: float,
        log: structlog.stdlib.BoundLogger, report: Report | None,
    ) -> None:  # fmt: skip
        async def quiet(_fraction: float) -> None:
            return None

        argv = [self.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
        if "-progress" not in argv:
            argv[-1:-1] = ["-progress", "pipe:1", "-nostats"]
        await run_ffmpeg(
            argv, workdir, duration_s=max(seconds, 0.001),
            deadline_s=run_timeout(seconds, self.settings.media_timeout_factor),
            report=report or quiet, log=log,
        )  # fmt: skip

    @staticmethod
    async def _write(workdir: Path, files: dict[str, str]) -> None:
        def write() -> None:
            for name, text in files.items():
                (workdir / name).write_text(text, encoding="utf-8")

        await asyncio.to_thread(write)

    async def _assets(self, timeline: Timeline, workdir: Path) -> dict[str, Asset]:
        """Every key a clip draws or plays, as a local file, probed for what the clip wants."""
        kinds: dict[str, AssetKind] = {}
        for _, _, clip in timeline.clips():
            if isinstance(clip, VideoClip):
                kinds[clip.key] = AssetKind.VIDEO
            elif isinstance(clip, ImageClip):
                kinds.setdefault(clip.key, AssetKind.IMAGE)
            elif isinstance(clip, AudioClip):
                kinds.setdefault(clip.key, AssetKind.AUDIO)
        s = self.settings
        slots = asyncio.Semaphore(PROBES_AT_ONCE)

        async def one(index: int, key: str, kind: AssetKind) -> tuple[str, Asset]:
            async with slots:
                dest = workdir / f"asset-{index}"
                what, kept = f"{kind.noun} {key!r}", self.tools.downloads
                path = await kept_path(self.store, key, dest, s.max_upload_bytes, kept, what=what)
                info = await probe_asset(path, kind, s.probe_timeout_s, max_pixels=s.max_pixels,
                                         max_duration_s=s.max_duration_s)  # fmt: skip
            return key, Asset(str(path), info.demuxer, info.duration, info.has_audio)

        found = await asyncio.gather(
            *(one(i, k, kind) for i, (k, kind) in enumerate(kinds.items()))
        )
        assets = dict(found)
        for _, _, clip in timeline.clips():
            if isinstance(clip, AudioClip) and not assets[clip.key].has_audio:
                raise PermanentError(
                    f"The audio file {clip.key!r} has no sound.", code="invalid_media"
                )
        return assets

    async def _captions(self, job: Job, timeline: Timeline, workdir: Path) -> None:
        """Each subtitles clip's captions as an ASS file, timed on the timeline."""
        out = timeline.output
        for t, c, clip in timeline.clips():
            if not isinstance(clip, SubtitlesClip):
                continue
            style = clip.caption_style()
            items = await self._timed(job, timeline, clip, style.layout())
            document = captions.to_ass_styled(items, out.width, out.height, style.look(),
                                              karaoke=style.karaoke)  # fmt: skip
            await self._write(workdir, {graph.captions_file(t, c): document})

    async def _timed(
        self, job: Job, timeline: Timeline, clip: SubtitlesClip, layout: Layout
    ) -> list[captions.Timed]:
        if clip.job is None and clip.key is None:  # this job's transcript of its clip
            options = job.options
            transcribed = isinstance(options, ComposeOptions) and options.transcribe
            if "transcript" not in job.outputs or not transcribed:
                raise PermanentError(
                    "The timeline's subtitles need a transcript.", code="invalid_timeline"
                )
            raw = await self.store.get_bytes(job.outputs["transcript"].key, CAPTIONS_MAX_BYTES)
            heard = timeline.named(transcribed)
            assert isinstance(heard, VideoClip | AudioClip)
            speed = heard.speed if isinstance(heard, VideoClip) else 1.0
            begin = heard.trim.start
            heard_cues = captions.timed(Transcript.from_json(raw), layout)
            items = captions.shift(heard_cues, heard.start, begin, begin + heard.duration * speed,
                                   speed=speed)  # fmt: skip
            return captions.shift(items, clip.start, clip.start, clip.end)  # its window only
        if clip.job is not None:
            other = await self.jobs.get(clip.job) if is_job_id(clip.job) else None
            if other is None or other.tenant != job.tenant or "transcript" not in other.outputs:
                raise PermanentError(f"The job {clip.job} has no transcript (any more).",
                                     code="source_not_found")  # fmt: skip
            key = other.outputs["transcript"].key
        else:
            assert clip.key is not None
            key = clip.key
        raw = await self.store.get_bytes(key, CAPTIONS_MAX_BYTES)
        return captions.shift(captions.timed(captions.parse_captions(raw), layout), clip.start, 0.0,
                              clip.duration)  # fmt: skip


async def compose_piece(tools: Tools, job: Job, run: PieceRun) -> str:
    """One segment of a long timeline's picture (any render worker's): the assets fetched and
    probed, the captions written, its frames rendered and stored; its key."""
    composer, piece, workdir = Composer(tools), run.piece, run.workdir
    timeline = Timeline.model_validate_json(job.timeline)
    assets = await composer._assets(timeline, workdir)
    await composer._captions(job, timeline, workdir)
    await asyncio.to_thread(fonts.link, workdir, graph.faces(timeline))
    fmt, rate = timeline.output.format, timeline.output.rate
    first = frames(piece.start, rate)
    name = f"segment.{fmt}"
    window = Window(first, first + piece.frames, audio=False, encoder=composer.encoder,
                    max_pixels=composer.settings.max_pixels)  # fmt: skip
    plan = graph.build(timeline, assets, name, window)
    await composer._write(workdir, plan.files)
    await composer._ffmpeg(plan.args, workdir, piece.seconds, run.log, run.report)
    key = segment_key(job.id, piece.index, run.tag, fmt)
    await tools.services.jobs.own_object(job.id, Stage.RENDER, key)  # deleted whatever happens
    await composer.store.put_file(key, workdir / name, CONTENT_TYPES[fmt])
    return key
