"""A long video's subtitles burnt in by every render worker at once: the picture cut at its
keyframes into segments (`media.cuts`), each encoded by any worker with the cues that fall in
it (a cue across a cut is drawn in both segments, each timed to its own), then joined without
re-encoding, the source's sound taken once, whole (`fanout` coordinates)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from vidstream.job.model import Job, Stage
from vidstream.kinds.base import PieceRun, StageRun, Tools, burnt_captions
from vidstream.kinds.encode import run_ffmpeg
from vidstream.kinds.fanout import fan_out, fans_out
from vidstream.kinds.sources import fetched_as, source_path
from vidstream.media import ffmpeg, fonts, scan
from vidstream.media.cuts import Piece, frame_cuts
from vidstream.media.info import MediaInfo, run_timeout
from vidstream.media.subtitles import Cue
from vidstream.media.transcript import Transcript
from vidstream.storage.names import segment_key

OUTPUT = "output.mp4"
LISTING = "segments.txt"
JOINED_AT = 0.95  # the stage's progress once every segment is encoded: joining them is the rest


def wanted(tools: Tools, job: Job, media: MediaInfo) -> bool:
    """Whether the render is fanned out: long, and burnt in (a subtitle track is a remux)."""
    return job.options.burn_subtitles and fans_out(tools.services.settings, media.duration)


async def burn_in_pieces(
    tools: Tools, job: Job, source: Path, media: MediaInfo, transcript: str, workdir: Path,
    run: StageRun,
) -> Path | None:  # fmt: skip
    """The job's video, its segments burnt by every render worker with the cues of the
    transcript stored at `transcript` and joined here; None when the picture cannot be cut
    (fewer than two keyframes)."""
    s = tools.services.settings

    async def cut() -> list[Piece] | None:
        found = await scan.keyframes(source, s.probe_timeout_s + media.duration / 50)
        run.log.info("keyframes_found", keyframes=len(found))
        return frame_cuts(found, media.duration, s.piece_s)

    # Every segment as this worker would encode it, whatever its own host's settings.
    encoder = {"preset": tools.encoder.preset, "crf": tools.encoder.crf}
    context = {"transcript": transcript, "media": media.to_dict(), "encoder": encoder}
    done = await fan_out(tools, job, run, Stage.RENDER, cut, burn_piece, workdir,
                         share=(0.0, JOINED_AT), context=context)  # fmt: skip
    if done is None:
        return None
    plan, keys = done
    store = tools.services.store
    limit = s.max_upload_bytes * 4
    names = [await fetched_as(store, key, workdir, f"segment-{i:04d}.mp4", limit)
             for i, key in enumerate(keys)]  # fmt: skip
    listing = "".join(f"file '{name}'\n" for name in names)  # names of our own: nothing to quote
    await asyncio.to_thread((workdir / LISTING).write_text, listing)
    argv = ffmpeg.join_segments(tools.ffmpeg, LISTING, str(source), OUTPUT, media, tools.encoder,
                                tools.bounds)  # fmt: skip

    async def quiet(fraction: float) -> None:  # joining is a copy: seconds, at the end
        del fraction

    await run_ffmpeg(argv, workdir, duration_s=media.duration,
                     deadline_s=run_timeout(media.duration / 10, s.media_timeout_factor),
                     report=quiet, log=run.log)  # fmt: skip
    run.log.info("segments_joined", segments=len(plan.pieces))
    return workdir / OUTPUT


async def burn_piece(tools: Tools, job: Job, run: PieceRun) -> str:
    """One segment (any render worker's): encoded with its cues, stored; its key."""
    s, store = tools.services.settings, tools.services.store
    piece, workdir = run.piece, run.workdir
    media = MediaInfo.from_dict(run.context["media"])
    raw = await store.get_bytes(str(run.context["transcript"]))
    source = await source_path(store, job, workdir, s.max_upload_bytes, tools.downloads)
    width, height = media.display_size
    # The cues seen in the segment, timed from its start: one across a cut is in both.
    window = (piece.start, piece.end if not piece.last else float("inf"))

    def draw() -> str:  # seconds of CPU for a long transcript: not on the loop
        return burnt_captions(job.options, Transcript.from_json(raw), width, height, window)

    document = await asyncio.to_thread(draw)
    await asyncio.to_thread((workdir / "subs.ass").write_text, document)
    await asyncio.to_thread(fonts.link, workdir, [job.options.captions.faces()])
    encoder = dataclasses.replace(tools.encoder, **run.context.get("encoder", {}))
    argv = ffmpeg.burn_segment(
        tools.ffmpeg, str(source), "subs.ass", OUTPUT, media, encoder,
        start=piece.start, frames=piece.frames, bounds=tools.bounds,
    )  # fmt: skip
    await run_ffmpeg(argv, workdir, duration_s=piece.seconds,
                     deadline_s=run_timeout(piece.seconds, s.media_timeout_factor),
                     report=run.report, log=run.log)  # fmt: skip
    key = segment_key(job.id, piece.index, run.tag)
    await tools.services.jobs.own_object(job.id, Stage.RENDER, key)  # deleted whatever happens
    await store.put_file(key, workdir / OUTPUT, "video/mp4")
    return key


def within(cues: list[Cue], piece: Piece) -> list[Cue]:
    """The cues seen in the segment, timed from its start: one across a cut is in both."""
    end = piece.end if not piece.last else float("inf")
    return [
        dataclasses.replace(cue, start=max(cue.start - piece.start, 0.0), end=cue.end - piece.start)
        for cue in cues
        if cue.end > piece.start and cue.start < end
    ]
