"""Fan-out's pieces without Whisper or FFmpeg: where a source is cut (`media.cuts`), how the
pieces' transcripts are joined (`media.seams`), and how pieces are leased, fenced and ended in
the real Redis (`state.pieces`)."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
from pathlib import Path

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from tests.media import FFMPEG
from vidstream.actors.outputs import RunObjects
from vidstream.core.signing import Signer
from vidstream.job.model import Job, Options, Stage
from vidstream.job.protocol import Cancel, Claim
from vidstream.kinds.sources import Downloads, source_path
from vidstream.media import scan
from vidstream.media.cuts import (
    OVERLAP_S,
    Piece,
    frame_cuts,
    parse_levels,
    parse_silences,
    pieces_from_json,
    pieces_to_json,
    quietest,
    speech_cuts,
    unpaused,
)
from vidstream.media.seams import merge_transcripts
from vidstream.media.transcript import Segment, Transcript, Word
from vidstream.state.jobstore import JobStore
from vidstream.state.keys import Keys
from vidstream.state.pieces import Held, PieceStore, Plan, Taken
from vidstream.storage.base import ObjectInfo
from vidstream.storage.local import LocalStore

# -- where a source is cut ------------------------------------------------------------------------


def test_pauses_are_read_from_silencedetect_in_either_form() -> None:
    printed = ["frame:10 pts:20480 pts_time:0.92", "lavfi.silence_start=0.664399",
               "lavfi.silence_end=0.981451", "lavfi.silence_duration=0.317"]  # fmt: skip
    logged = ["[silencedetect @ 0x1] silence_start: 12.5",
              "[silencedetect @ 0x1] silence_end: 13.25 | silence_duration: 0.75",
              "[silencedetect @ 0x1] silence_start: 99.0"]  # fmt: skip
    assert parse_silences(printed) == [(0.664399, 0.981451)]
    assert parse_silences(logged) == [(12.5, 13.25)]  # the last pause runs to the end: no cut


def test_speech_is_cut_in_the_pause_nearest_each_target() -> None:
    pauses = [(95.0, 95.6), (99.0, 100.0), (150.0, 151.0), (203.0, 203.4)]
    pieces = speech_cuts(300.0, 100.0, pauses)
    assert [(p.start, p.keep_from) for p in pieces] == [(0.0, 0.0), (99.5, 99.5), (203.2, 203.2)]
    assert [p.end for p in pieces] == [99.5, 203.2, 300.0]
    assert [p.keep_to for p in pieces] == [99.5, 203.2, math.inf]  # the last keeps what follows
    assert [p.last for p in pieces] == [False, False, True]


def test_speech_with_no_pause_near_a_cut_overlaps_there() -> None:
    pauses = [(40.0, 41.0)]  # nowhere near 100 or 200
    assert set(unpaused(300.0, 100.0, pauses)) == {1, 2}
    pieces = speech_cuts(300.0, 100.0, pauses, quiet={1: 101.3})  # cut 2: no reading either
    assert (pieces[0].end, pieces[0].keep_to) == (101.3 + OVERLAP_S, 101.3)
    assert (pieces[1].start, pieces[1].keep_from) == (101.3 - OVERLAP_S, 101.3)
    assert (pieces[1].end, pieces[2].start) == (200.0 + OVERLAP_S, 200.0 - OVERLAP_S)


def test_a_cut_with_no_pause_goes_at_the_quietest_moment() -> None:
    level = "lavfi.astats.Overall.RMS_level"
    printed = ["frame:0 pts:348 pts_time:0.0157", f"{level}=-32.9",
               "frame:1 pts:1148 pts_time:0.0520", f"{level}=-87.8",
               "frame:2 pts:1948 pts_time:0.0883", f"{level}=-inf"]  # fmt: skip
    levels = parse_levels(printed, offset=70.0)
    assert [t for t, _ in levels] == [70.0157, 70.052, 70.0883]
    assert quietest(levels, around=70.0) == 70.0883
    assert quietest([], around=5.0) == 5.0


def test_pictures_are_cut_at_keyframes_with_every_frame_counted_once() -> None:
    keyframes = [(i * 10.0, 250) for i in range(30)]  # 300 s at 25 fps, a keyframe every 10 s
    pieces = frame_cuts(keyframes, 300.0, 100.0)
    assert pieces is not None
    assert [p.start for p in pieces] == [0.0, 100.0, 200.0]
    assert sum(p.frames for p in pieces) == 30 * 250
    assert pieces[-1].last and pieces[-1].end == 300.0
    assert frame_cuts([(0.0, 7500)], 300.0, 100.0) is None  # one keyframe: cannot be cut


def test_pieces_survive_their_json() -> None:
    pieces = speech_cuts(300.0, 100.0, [])
    assert pieces_from_json(json.loads(json.dumps(pieces_to_json(pieces)))) == tuple(pieces)


# -- joining transcripts ------------------------------------------------------------------------


def _heard(words: list[tuple[str, float]], *, shift: float = 0.0) -> Transcript:
    """One segment per word, as a piece's Whisper might have heard them (times `shift`ed)."""
    segs = tuple(Segment(t + shift, t + shift + 0.3, w, (Word(w, t + shift, t + shift + 0.3),))
                 for w, t in words)  # fmt: skip
    return Transcript("en", 0.0, segs, "tiny.en")


def _text(transcript: Transcript) -> list[str]:
    return [w.text for seg in transcript.segments for w in seg.words]


def test_overlapping_pieces_keep_each_word_once_even_when_their_times_disagree() -> None:
    spoken = [(f"w{i}", i * 0.5) for i in range(40)]  # 0..19.5 s, a word every half second
    cut = 10.1
    first = Piece(0, 0.0, cut + OVERLAP_S, 0.0, cut, last=False)
    second = Piece(1, cut - OVERLAP_S, 20.0, cut, math.inf, last=True)
    heard_first = _heard([(w, t) for w, t in spoken if t < cut + OVERLAP_S])
    # The later piece hears the words near its start 0.3 s late: by time alone "w20" (10.0 s)
    # would be kept by both pieces.
    heard_second = _heard([(w, t) for w, t in spoken if t >= cut - OVERLAP_S], shift=0.3)
    merged = merge_transcripts([(first, heard_first), (second, heard_second)], 20.0)
    assert _text(merged) == [w for w, _ in spoken]
    starts = [w.start for seg in merged.segments for w in seg.words]
    assert starts == sorted(starts)
    assert all(a.end <= b.start for a, b in zip(merged.segments, merged.segments[1:], strict=False))


@given(
    words=st.lists(st.floats(0.0, 60.0, allow_nan=False), min_size=1, max_size=200, unique=True),
    cut=st.floats(15.0, 45.0),
    drift=st.floats(-0.4, 0.4),
    overlap=st.booleans(),
)
def test_no_word_is_lost_or_doubled_at_a_seam(
    words: list[float], cut: float, drift: float, overlap: bool
) -> None:
    """Whatever the words' times, the cut and the later piece's drift near its edge."""
    spoken = [(f"w{i}", t) for i, t in enumerate(sorted(words))]
    o = OVERLAP_S if overlap else 0.0
    first = Piece(0, 0.0, cut + o, 0.0, cut)
    second = Piece(1, cut - o, 60.0, cut, math.inf, last=True)
    heard_first = _heard([(w, t) for w, t in spoken if t < cut + o])
    later = [(w, t) for w, t in spoken if t >= cut - o]
    if not overlap:
        drift = 0.0  # a cut in a pause: nothing is heard twice
    merged = merge_transcripts([(first, heard_first), (second, _heard(later, shift=drift))], 60.0)
    assert _text(merged) == [w for w, _ in spoken]
    starts = [w.start for seg in merged.segments for w in seg.words]
    assert starts == sorted(starts), "times go back at the seam"
    assert all(a.end <= b.start for a, b in zip(merged.segments, merged.segments[1:], strict=False))


# -- pieces in Redis ----------------------------------------------------------------------------

LEASE_MS = 30_000
COORDINATOR = "host-transcribe-0:aaaa"


@pytest.fixture
def jobs(redis: Redis, prefix: str) -> JobStore:
    return JobStore(redis, Keys(prefix), ttl_s=3600)


@pytest.fixture
def pieces(redis: Redis, prefix: str) -> PieceStore:
    return PieceStore(redis, Keys(prefix), ttl_s=3600)


@pytest.fixture
async def running(jobs: JobStore) -> Job:
    """A job whose transcribe stage COORDINATOR holds."""
    job = Job.new("uploads/abc/long.mp4", Options())
    await jobs.create(job)
    claim = Claim.of(job, Stage.TRANSCRIBE, owner=COORDINATOR, lease_ms=LEASE_MS, max_attempts=3)
    assert (await jobs.apply(job.id, claim)).ok
    return job


async def _plan(pieces: PieceStore, job: Job) -> Plan:
    plan = await pieces.adopt(Plan.new(job.id, Stage.TRANSCRIBE, speech_cuts(900, 300, [])),
                              COORDINATOR)  # fmt: skip
    assert plan is not None
    return plan


async def test_a_plan_is_recorded_once_and_only_by_the_stages_holder(
    pieces: PieceStore, running: Job
) -> None:
    plan = await _plan(pieces, running)
    again = await pieces.adopt(Plan.new(running.id, Stage.TRANSCRIBE, []), COORDINATOR)
    assert again == plan  # a run taking the stage over goes on with the same pieces
    assert await pieces.adopt(plan, "someone-else:bbbb") is None
    assert await pieces.plan(running.id, Stage.TRANSCRIBE) == plan


async def test_a_piece_is_leased_to_one_worker_and_fenced(
    pieces: PieceStore, running: Job, redis: Redis, prefix: str
) -> None:
    plan = await _plan(pieces, running)
    assert await pieces.claim(plan, 1, "worker-b:1", LEASE_MS, 3) == (Taken.OK, 1, 1)
    assert (await pieces.claim(plan, 1, "worker-c:1", LEASE_MS, 3))[0] is Taken.BUSY
    # The coordinator takes the first free piece: not the leased one.
    assert await pieces.claim(plan, None, COORDINATOR, LEASE_MS, 3) == (Taken.OK, 0, 1)
    # worker-b is cut off: its lease lapses and worker-c takes the piece over.
    await redis.hset(Keys(prefix).job_pieces(running.id), "transcribe:1:until", 0)
    assert await pieces.claim(plan, 1, "worker-c:1", LEASE_MS, 3) == (Taken.OK, 1, 2)
    # worker-b comes back: its renewal and its late result are refused, nothing is written.
    assert await pieces.renew(plan, 1, "worker-b:1", LEASE_MS, 0.5) is Held.TAKEN
    assert await pieces.done(plan, 1, "worker-b:1", "late") is Held.TAKEN
    assert await pieces.done(plan, 1, "worker-c:1", "heard") is Held.HELD
    assert [s.done for s in await pieces.states(plan)] == [False, True, False]
    assert await pieces.results(plan) == ["", "heard", ""]
    assert (await pieces.claim(plan, 1, "worker-d:1", LEASE_MS, 3))[0] is Taken.DONE
    assert (await pieces.claim(plan, 2, "worker-d:1", LEASE_MS, 3))[0] is Taken.OK


async def test_a_failed_piece_is_tried_again_until_its_tries_run_out(
    pieces: PieceStore, running: Job
) -> None:
    plan = await _plan(pieces, running)
    for attempt in (1, 2):
        assert await pieces.claim(plan, 2, "w:1", LEASE_MS, 2) == (Taken.OK, 2, attempt)
        error = {"code": "timeout", "message": "slow", "permanent": False}
        assert await pieces.failed(plan, 2, "w:1", error) is Held.HELD
    assert (await pieces.claim(plan, 2, "w:1", LEASE_MS, 2))[0] is Taken.EXHAUSTED
    assert (await pieces.states(plan))[2].error == error
    # The stage's next run (a retry, a replay) gives the unfinished pieces their tries again.
    assert await pieces.adopt(plan, COORDINATOR) == plan
    assert (await pieces.states(plan))[2].error is None
    assert await pieces.claim(plan, 2, "w:1", LEASE_MS, 2) == (Taken.OK, 2, 1)
    # A piece handed back at shutdown was not a try.
    assert await pieces.claim(plan, 0, "w:2", LEASE_MS, 2) == (Taken.OK, 0, 1)
    assert await pieces.hand_back(plan, 0, "w:2") is Held.HELD
    assert await pieces.claim(plan, 0, "w:3", LEASE_MS, 2) == (Taken.OK, 0, 1)


async def test_a_piece_whose_workers_keep_dying_runs_out_of_tries_with_a_reason(
    pieces: PieceStore, running: Job, redis: Redis, prefix: str
) -> None:
    """Workers killed (or cut off) three times on one piece: the coordinator finds it out of
    tries, with `worker_lost`, rather than waiting for it for ever."""
    plan = await _plan(pieces, running)
    for i in (0, 2):
        assert (await pieces.claim(plan, i, "w:0", LEASE_MS, 3))[0] is Taken.OK
        assert await pieces.done(plan, i, "w:0", "heard") is Held.HELD
    for attempt in (1, 2, 3):
        assert await pieces.claim(plan, 1, f"w:{attempt}", LEASE_MS, 3) == (Taken.OK, 1, attempt)
        await redis.hset(Keys(prefix).job_pieces(running.id), "transcribe:1:until", 0)  # killed
    assert await pieces.claim(plan, None, COORDINATOR, LEASE_MS, 3) == (Taken.EXHAUSTED, 1, 0)
    error = (await pieces.states(plan))[1].error
    assert error is not None and error["code"] == "worker_lost"


async def test_a_cancel_ends_every_piece(pieces: PieceStore, jobs: JobStore, running: Job) -> None:
    plan = await _plan(pieces, running)
    assert (await pieces.claim(plan, 1, "w:1", LEASE_MS, 3))[0] is Taken.OK
    assert (await jobs.apply(running.id, Cancel())).ok
    assert await pieces.renew(plan, 1, "w:1", LEASE_MS) is Held.GONE
    assert await pieces.done(plan, 1, "w:1", "too late") is Held.GONE
    assert (await pieces.claim(plan, 2, "w:2", LEASE_MS, 3))[0] is Taken.GONE


async def test_an_entry_of_an_older_plan_is_stale(pieces: PieceStore, running: Job) -> None:
    plan = await _plan(pieces, running)
    older = Plan(plan.job_id, plan.stage, "0ld0ld0ld0ld", plan.pieces)
    assert (await pieces.claim(older, 0, "w:1", LEASE_MS, 3))[0] is Taken.STALE
    await pieces.forget(running.id, Stage.TRANSCRIBE)
    assert await pieces.plan(running.id, Stage.TRANSCRIBE) is None
    assert (await pieces.claim(plan, 0, "w:1", LEASE_MS, 3))[0] is Taken.STALE


# -- what can be cut ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six seconds at 25 fps, a keyframe every second."""
    path = tmp_path_factory.mktemp("keyed") / "keyed.mp4"
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25",
         "-f", "lavfi", "-i", "sine", "-t", "6", "-c:v", "libx264", "-preset", "ultrafast",
         "-g", "25", "-c:a", "aac", str(path)],
        check=True,
    )  # fmt: skip
    return path


async def test_a_source_is_cut_at_its_keyframes_with_every_frame_counted(keyed: Path) -> None:
    found = await scan.keyframes(keyed, 30.0)
    assert found == [(float(i), 25) for i in range(6)]


@pytest.mark.parametrize(
    ("how", "why"),
    [
        (["-ss", "1.3", "-c", "copy"], "an edit list discards the frames before 1.3 s"),
        (["-c", "copy", "-output_ts_offset", "0.5", "-f", "mpegts"], "the picture starts late"),
    ],
)
async def test_a_source_whose_frames_would_not_join_exactly_is_rendered_whole(
    keyed: Path, tmp_path: Path, how: list[str], why: str
) -> None:
    """Cut and joined, such a source would gain frames at a seam or lose its sync with the
    sound: it gets no keyframes to cut at, so its render runs whole, on one worker."""
    changed = tmp_path / "changed.mp4"
    argv = [FFMPEG, "-v", "error", "-y", "-i", str(keyed), *how, str(changed)]
    await asyncio.to_thread(subprocess.run, argv, check=True)
    assert await scan.keyframes(changed, 30.0) == [], why


# -- a source downloaded once per worker ---------------------------------------------------------


class RemoteStore(LocalStore):
    """Local files served as a bucket would (no path in place), counting the downloads."""

    downloads = 0

    def local_path(self, key: str) -> Path | None:
        return None

    async def get_file(self, key: str, dest: Path, max_size: int | None = None) -> ObjectInfo:
        self.downloads += 1
        return await super().get_file(key, dest, max_size)


async def test_a_workers_pieces_download_their_source_once(tmp_path: Path) -> None:
    """With a bucket, the pieces one worker takes of a job read one download of its source,
    each through a link of its own that outlives the download's eviction."""
    async with RemoteStore(tmp_path / "bucket", Signer(b"s"), "http://gateway") as store:
        source = tmp_path / "talk.mp4"
        source.write_bytes(b"x" * 1000)
        jobs = [Job.new(f"uploads/{name}/talk.mp4", Options()) for name in ("a", "b", "c")]
        for job in jobs:
            await store.put_file(job.source_key, source, "video/mp4")
        downloads = Downloads(lambda: tmp_path / "worker", keep=2)
        paths = []
        for piece in range(3):  # three pieces of the first job, one after another
            workdir = tmp_path / f"piece-{piece}"
            workdir.mkdir()
            paths.append(await source_path(store, jobs[0], workdir, 10_000, downloads))
        assert store.downloads == 1
        for job in jobs[1:]:  # two other jobs' sources: the first job's is evicted
            workdir = tmp_path / f"run-{job.id}"
            workdir.mkdir()
            await source_path(store, job, workdir, 10_000, downloads)
        assert store.downloads == 3
        assert all(p.read_bytes() == b"x" * 1000 for p in paths)  # still readable where linked
        assert len(list((tmp_path / "worker" / "downloads").iterdir())) == 2
        await downloads.clear()
        assert not list((tmp_path / "worker" / "downloads").iterdir())


async def test_a_cancelled_jobs_finished_segments_are_deleted(
    jobs: JobStore, running: Job, tmp_path: Path
) -> None:
    """Segments other workers stored for a job that is then cancelled go when its stage's run
    ends, not a retention period later; a job that runs the stage again keeps them."""
    async with LocalStore(tmp_path / "storage", Signer(b"s"), "http://gateway") as store:
        piece = tmp_path / "segment.mp4"
        piece.write_bytes(b"frames")
        kept, gone = "jobs/x/helper1/segment-0000.mp4", "jobs/y/helper2/segment-0001.mp4"
        log = structlog.get_logger()
        await jobs.own_object(running.id, Stage.TRANSCRIBE, kept)
        await store.put_file(kept, piece, "video/mp4")
        await RunObjects(store, jobs, Stage.TRANSCRIBE, running.id, log).discard()
        assert await store.head(kept) is not None  # the job still runs: its pieces are kept
        await jobs.own_object(running.id, Stage.TRANSCRIBE, gone)
        await store.put_file(gone, piece, "video/mp4")
        assert (await jobs.apply(running.id, Cancel())).ok
        await RunObjects(store, jobs, Stage.TRANSCRIBE, running.id, log).discard()
        assert await store.head(kept) is None and await store.head(gone) is None
        assert await jobs.owned_objects(running.id) == []
