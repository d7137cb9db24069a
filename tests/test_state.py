"""The job protocol against the real Redis: every operation, applied atomically by Lua."""

from __future__ import annotations

import time

import pytest
from redis.asyncio import Redis

from vidstream.job.model import ErrorInfo, Job, Kind, Options, Output, Stage, Status
from vidstream.job.pipelines import pipeline
from vidstream.job.protocol import (
    Cancel,
    Claim,
    EventName,
    Fail,
    FinishStage,
    Progress,
    Replay,
    Retry,
)
from vidstream.media.info import MediaInfo
from vidstream.state import bus
from vidstream.state.jobstore import EXPIRY_MARGIN_S, JobStore
from vidstream.state.keys import Keys

BURN = Options(burn_subtitles=True)
SOFT = Options(burn_subtitles=False)
TTL_S = 3600

TRANSCRIPT = Output("jobs/x/transcript.json", 1200, "application/json")
SRT = Output("jobs/x/transcript.srt", 300, "application/x-subrip")
VIDEO = Output("rendered/x-20250101T000000Z.mp4", 4_000_000, "video/mp4")
MEDIA = MediaInfo(10.0, "mov,mp4", 640, 360, 0, "h264", "aac", 1, 22050)
OWNER = "host-render-0:run1"


def start(
    job: Job, stage: Stage, owner: str = OWNER, lease_ms: int = 30_000, gen: int | None = None
) -> Claim:
    """A worker's claim of `stage`, as the worker makes it."""
    return Claim.of(job, stage, owner=owner, lease_ms=lease_ms, max_attempts=3, gen=gen)


def progress(job: Job, stage: Stage, fraction: float, owner: str = OWNER) -> Progress:
    return Progress.of(job, stage, fraction, owner=owner)


def finish(
    job: Job, stage: Stage, outputs: dict[str, Output], owner: str = OWNER,
    media: MediaInfo | None = None,
) -> FinishStage:  # fmt: skip
    return FinishStage.of(job, stage, outputs, owner=owner, media=media)


def complete(job: Job, owner: str = OWNER) -> FinishStage:
    return finish(job, Stage.RENDER, {"video": VIDEO}, owner)


def retrying(error: ErrorInfo, stage: Stage, delay_s: float, owner: str = OWNER) -> Retry:
    return Retry(stage=stage, owner=owner, error=error, attempt=1, delay_s=delay_s)


# -- pipelines (pure) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "stage", "fraction", "expected"),
    [
        (BURN, Stage.TRANSCRIBE, 0.0, 0.0),
        (BURN, Stage.TRANSCRIBE, 0.5, 0.225),
        (BURN, Stage.TRANSCRIBE, 1.0, 0.45),
        (BURN, Stage.RENDER, 0.0, 0.45),
        (BURN, Stage.RENDER, 0.5, 0.725),
        (BURN, Stage.RENDER, 1.0, 1.0),
        (SOFT, Stage.TRANSCRIBE, 0.5, 0.45),
        (SOFT, Stage.TRANSCRIBE, 1.0, 0.9),
        (SOFT, Stage.RENDER, 0.0, 0.9),
        (SOFT, Stage.RENDER, 0.5, 0.95),
        (SOFT, Stage.RENDER, 1.0, 1.0),
    ],
)
def test_subtitle_progress_weights(
    options: Options, stage: Stage, fraction: float, expected: float
) -> None:
    """Burning subtitles weighs rendering 55 %; a soft track makes rendering only the last 10 %."""
    assert pipeline(Kind.SUBTITLE).progress(options, stage, fraction) == pytest.approx(expected)


@pytest.mark.parametrize("kind", list(Kind))
@pytest.mark.parametrize("options", [BURN, SOFT])
def test_progress_is_monotonic_and_ends_at_one(kind: Kind, options: Options) -> None:
    """Every kind's bar only moves forward through its stages and ends exactly at 100 %."""
    flow = pipeline(kind)
    fractions = [-0.5, 0.0, 0.1, 0.25, 0.5, 0.75, 0.99, 1.0, 1.5]
    values = [flow.progress(options, s, f) for s in flow.stages for f in fractions]
    assert values == sorted(values)
    assert values[0] == 0.0 and values[-1] == 1.0


def test_a_transcribe_job_is_one_stage() -> None:
    """A transcript-only job ends with its transcribe stage; a subtitle job renders next."""
    assert pipeline(Kind.TRANSCRIBE).stages == (Stage.TRANSCRIBE,)
    assert pipeline(Kind.TRANSCRIBE).next_stage(Stage.TRANSCRIBE) is None
    assert pipeline(Kind.SUBTITLE).next_stage(Stage.TRANSCRIBE) is Stage.RENDER
    assert pipeline(Kind.SUBTITLE).next_stage(Stage.RENDER) is None


def test_a_replay_starts_at_the_first_unfinished_stage() -> None:
    """A replayed job keeps what finished stages stored and starts where it stopped."""
    job = Job.new("uploads/a/b.mp4", BURN)
    assert Replay.of(job).first_stage is Stage.TRANSCRIBE
    done = job.with_changes(done=frozenset({Stage.TRANSCRIBE}))
    assert Replay.of(done).first_stage is Stage.RENDER


def test_operations_carry_rounded_progress() -> None:
    """Progress events say how far the current stage is, rounded and clamped for display."""
    job = Job.new("uploads/a/b.mp4", BURN)
    over = progress(job, Stage.RENDER, 1.23456)
    assert (over.stage_progress, over.progress) == (1.0, 1.0)
    assert progress(job, Stage.TRANSCRIBE, 0.333333).stage_progress == 0.3333
    assert start(job, Stage.RENDER).progress == 0.45
    assert complete(job).event is EventName.COMPLETED
    assert finish(job, Stage.TRANSCRIBE, {}).event is EventName.STAGE_COMPLETED


# -- the job store against Redis ---------------------------------------------------------------


@pytest.fixture
def store(redis: Redis, prefix: str) -> JobStore:
    return JobStore(redis, Keys(prefix), ttl_s=TTL_S)


@pytest.fixture
async def job(store: JobStore) -> Job:
    new = Job.new("uploads/abc/clip.mp4", BURN)
    await store.create(new)
    return new


async def names(store: JobStore, job_id: str) -> list[str]:
    return [e.event.value for e in await store.events(job_id)]


async def test_create_records_a_queued_event(store: JobStore, redis: Redis, prefix: str) -> None:
    """A new job reads back as queued with one `queued` event and is handed to transcription."""
    new = Job.new("uploads/abc/clip.mp4", SOFT, tenant="acme")
    await store.create(new)

    assert await store.get(new.id) == new
    [stored] = await store.events(new.id)
    assert (stored.event, stored.status, stored.stage) == (EventName.QUEUED, Status.QUEUED, None)
    assert stored.progress == 0.0

    work = await bus.history(redis, Keys(prefix).stage_stream(Stage.TRANSCRIBE))
    assert [fields for _, fields in work] == [{"job_id": new.id, "gen": "1"}]
    feed = await bus.history(redis, Keys(prefix).events)
    assert [(f["job_id"], f["id"], f["event"]) for _, f in feed] == [
        (new.id, stored.id, "queued")
    ]  # the whole event, for notifiers to fan out without reading the job's history
    assert await redis.ttl(Keys(prefix).job(new.id)) == -1  # kept until it ends


async def test_a_resent_create_changes_nothing(store: JobStore, job: Job) -> None:
    """A create resent after a lost reply keeps the job and its history as they were."""
    await store.create(job.with_changes(source_key="uploads/other/x.mp4"))
    stored = await store.get(job.id)
    assert stored is not None and stored.source_key == job.source_key
    assert await names(store, job.id) == ["queued"]


async def test_a_job_runs_through_its_events_in_order(store: JobStore, job: Job) -> None:
    """A whole run reads back as queued, started, progress, stage_completed ... completed."""
    steps = [
        start(job, Stage.TRANSCRIBE),
        progress(job, Stage.TRANSCRIBE, 0.5, owner=OWNER),
        finish(job, Stage.TRANSCRIBE, {"transcript": TRANSCRIPT}, media=MEDIA),
        start(job, Stage.RENDER),
        progress(job, Stage.RENDER, 0.5, owner=OWNER),
        complete(job, OWNER),
    ]
    applied = [await store.apply(job.id, t) for t in steps]
    assert all(a.ok for a in applied), applied
    assert [a.status for a in applied][-1] is Status.COMPLETED

    events = await store.events(job.id)
    assert [e.event.value for e in events] == [
        "queued", "started", "progress", "stage_completed", "started", "progress", "completed",
    ]  # fmt: skip
    assert [e.id for e in events[1:]] == [a.event_id for a in applied]
    t, r = Stage.TRANSCRIBE, Stage.RENDER
    assert [e.stage for e in events] == [None, t, t, t, r, r, None]
    assert [e.progress for e in events] == [0.0, 0.0, 0.225, 0.45, 0.45, 0.725, 1.0]
    assert events[2].data == {"stage_progress": 0.5}
    assert events[3].data == {"outputs": ["transcript"]}
    assert events[-1].status is Status.COMPLETED

    done = await store.get(job.id)
    assert done is not None
    assert (done.status, done.stage, done.progress) == (Status.COMPLETED, None, 1.0)
    assert done.media == MEDIA
    assert done.updated_at >= job.updated_at


async def test_progress_never_decreases(store: JobStore, job: Job) -> None:
    """A late, lower progress report is ignored: no event, and the bar stays where it was."""
    await store.apply(job.id, start(job, Stage.TRANSCRIBE))
    assert (await store.apply(job.id, progress(job, Stage.TRANSCRIBE, 0.6, owner=OWNER))).ok

    lower = await store.apply(job.id, progress(job, Stage.TRANSCRIBE, 0.3, owner=OWNER))
    same = await store.apply(job.id, progress(job, Stage.TRANSCRIBE, 0.6, owner=OWNER))
    assert (lower.outcome, lower.status, lower.event_id) == ("unchanged", Status.RUNNING, None)
    assert same.outcome == "unchanged"

    stored = await store.get(job.id)
    assert stored is not None and stored.progress == pytest.approx(0.27)
    assert await names(store, job.id) == ["queued", "started", "progress"]

    # A restarted stage does not move the job's progress back either.
    again = await store.apply(job.id, start(job, Stage.TRANSCRIBE))
    assert again.ok
    assert (await store.events(job.id))[-1].progress == pytest.approx(0.27)


async def test_a_completed_job_cannot_be_cancelled(store: JobStore, job: Job) -> None:
    """Cancelling after completion changes nothing: the job stays completed."""
    await store.apply(job.id, start(job, Stage.RENDER))
    assert (await store.apply(job.id, complete(job, OWNER))).ok
    refused = await store.apply(job.id, Cancel())
    assert (refused.outcome, refused.status, refused.ok) == ("rejected", Status.COMPLETED, False)
    failed = await store.apply(job.id, Fail(error=ErrorInfo("late", "too late")))
    assert failed.outcome == "rejected"
    stored = await store.get(job.id)
    assert stored is not None and stored.status is Status.COMPLETED and stored.error is None
    assert await names(store, job.id) == ["queued", "started", "completed"]


async def test_a_cancelled_job_cannot_complete(store: JobStore, job: Job) -> None:
    """A worker finishing after the user cancelled cannot turn the job into completed."""
    await store.apply(job.id, start(job, Stage.RENDER))
    assert (await store.apply(job.id, Cancel())).ok
    for late in (
        complete(job, OWNER),
        progress(job, Stage.RENDER, 0.9, owner=OWNER),
        start(job, Stage.RENDER),
        Cancel(),
    ):
        refused = await store.apply(job.id, late)
        assert (refused.outcome, refused.status) == ("rejected", Status.CANCELLED), late.event
    stored = await store.get(job.id)
    assert stored is not None
    assert stored.status is Status.CANCELLED and stored.outputs == {}
    assert await names(store, job.id) == ["queued", "started", "cancelled"]


async def test_a_queued_job_can_be_cancelled(store: JobStore, job: Job) -> None:
    """A job nobody has started yet can be cancelled, and then never starts."""
    assert (await store.apply(job.id, Cancel())).ok
    assert not (await store.apply(job.id, start(job, Stage.TRANSCRIBE))).ok
    assert await names(store, job.id) == ["queued", "cancelled"]


async def test_fail_records_the_error(store: JobStore, job: Job) -> None:
    """A failed job tells the user what went wrong, on the job and on its last event."""
    await store.apply(job.id, start(job, Stage.TRANSCRIBE))
    error = ErrorInfo("invalid_media", "The file has no audio track.")
    applied = await store.apply(job.id, Fail(error=error))
    assert applied.ok and applied.status is Status.FAILED
    stored = await store.get(job.id)
    assert stored is not None
    assert stored.status is Status.FAILED and stored.error == error
    last = (await store.events(job.id))[-1]
    assert last.event is EventName.FAILED and last.data == {"error": error.to_dict()}
    assert not (await store.apply(job.id, complete(job))).ok


async def test_outputs_merge_across_transitions(store: JobStore, job: Job) -> None:
    """Outputs stored by each stage add up; a later stage never drops an earlier one's."""
    await store.apply(job.id, start(job, Stage.TRANSCRIBE))
    await store.apply(
        job.id,
        finish(job, Stage.TRANSCRIBE, {"transcript": TRANSCRIPT, "srt": SRT}, owner=OWNER),
    )
    await store.apply(job.id, start(job, Stage.RENDER))
    await store.apply(job.id, complete(job, OWNER))
    stored = await store.get(job.id)
    assert stored is not None
    assert stored.outputs == {"transcript": TRANSCRIPT, "srt": SRT, "video": VIDEO}


@pytest.mark.parametrize("end", ["complete", "fail", "cancel"])
async def test_terminal_transitions_expire_both_keys(
    store: JobStore, job: Job, redis: Redis, prefix: str, end: str
) -> None:
    """A finished job is due for removal after JOB_RETENTION_S (maintenance removes it, with
    its outputs), and its keys expire a day later should that never run."""
    keys = Keys(prefix)
    await store.apply(job.id, start(job, Stage.RENDER))
    assert await redis.ttl(keys.job(job.id)) == -1
    assert await redis.ttl(keys.job_events(job.id)) == -1
    terminal = {
        "complete": complete(job, OWNER),
        "fail": Fail(error=ErrorInfo("x", "y")),
        "cancel": Cancel(),
    }[end]
    assert (await store.apply(job.id, terminal)).ok
    backstop = TTL_S + EXPIRY_MARGIN_S
    assert backstop - 5 <= await redis.ttl(keys.job(job.id)) <= backstop
    # The history goes after EVENT_RETENTION_S (here the store's default: the retention).
    assert TTL_S - 5 <= await redis.ttl(keys.job_events(job.id)) <= TTL_S
    due = await redis.zscore(keys.retention, job.id)
    assert due is not None and abs(due - (time.time() + TTL_S)) < 5


async def test_snapshot_returns_the_job_and_its_last_event_id(store: JobStore, job: Job) -> None:
    """A client that reads the job can resume its events exactly after what it has seen."""
    applied = await store.apply(job.id, start(job, Stage.TRANSCRIBE))
    snap, last_id = await store.snapshot(job.id)
    assert snap is not None and snap.status is Status.RUNNING
    assert last_id == applied.event_id
    assert await store.events(job.id, after=last_id) == []

    assert await store.snapshot("0" * 26) == (None, "0-0")
    assert await store.get("0" * 26) is None


async def test_events_pagination(store: JobStore, job: Job) -> None:
    """Events can be read in pages after any event id, without gaps or repeats."""
    await store.apply(job.id, start(job, Stage.TRANSCRIBE))
    for fraction in (0.2, 0.4, 0.6, 0.8):
        await store.apply(job.id, progress(job, Stage.TRANSCRIBE, fraction, owner=OWNER))
    everything = await store.events(job.id)
    assert len(everything) == 6

    pages, cursor = [], "0-0"
    while page := await store.events(job.id, after=cursor, count=4):
        pages.append(page)
        cursor = page[-1].id
    assert [len(p) for p in pages] == [4, 2]
    assert [e for p in pages for e in p] == everything
    assert await store.events(job.id, after=everything[2].id) == everything[3:]
    assert await store.events("0" * 26) == []


async def test_a_report_for_another_stage_is_rejected(store: JobStore, job: Job) -> None:
    """Progress or completion from a stage the job is not in leaves the job untouched."""
    await store.apply(job.id, start(job, Stage.TRANSCRIBE))
    for stray in (
        progress(job, Stage.RENDER, 0.5, owner=OWNER),
        finish(job, Stage.RENDER, {"video": VIDEO}, owner=OWNER),
    ):
        refused = await store.apply(job.id, stray)
        assert (refused.outcome, refused.status) == ("rejected", Status.RUNNING)
    stored = await store.get(job.id)
    assert stored is not None
    assert stored.stage is Stage.TRANSCRIBE and stored.outputs == {} and stored.progress == 0.0
    assert await names(store, job.id) == ["queued", "started"]


async def test_progress_before_start_is_rejected(store: JobStore, job: Job) -> None:
    """A queued job does not show progress until a worker has started it."""
    refused = await store.apply(job.id, progress(job, Stage.TRANSCRIBE, 0.5, owner=OWNER))
    assert (refused.outcome, refused.status) == ("rejected", Status.QUEUED)


async def test_a_missing_job_is_reported_missing(
    store: JobStore, redis: Redis, prefix: str
) -> None:
    """Transitions on a job that does not exist (or expired) create nothing."""
    applied = await store.apply("0" * 26, start(Job.new("uploads/a/b.mp4", BURN), Stage.TRANSCRIBE))
    assert (applied.outcome, applied.status, applied.ok) == ("missing", None, False)
    assert not await redis.exists(Keys(prefix).job("0" * 26), Keys(prefix).job_events("0" * 26))


async def test_each_jobs_keys_share_one_hash_tag(store: JobStore, job: Job, redis: Redis) -> None:
    """A job's hash and its history live in one Redis Cluster slot, tagged with the job id."""
    keys = store.keys
    for key in (keys.job(job.id), keys.job_events(job.id)):
        start = key.index("{")
        assert key[start + 1 : key.index("}", start)] == job.id, key  # Redis hashes only this
        assert await redis.exists(key)
    assert keys.job(job.id) != keys.job_events(job.id)
    assert keys.job("a") != keys.job("b")


def test_the_scripts_touch_only_fields_of_the_schema() -> None:
    """Every job-hash field the Lua scripts or `Job` read or write is declared, with its
    meaning, in `protocol.schema`: there are no fields that exist only in Lua."""
    import re

    from vidstream.job.protocol.schema import MEANING, Field
    from vidstream.state import scripts

    declared = {f.value for f in Field}
    assert set(MEANING) == set(Field)
    used: set[str] = set()
    for name in ("job_create", "job_create_from_upload", "job_transition", "job_renew"):
        for args in re.findall(r"redis\.call\('H\w+', KEYS\[1\],([^)]*)\)", scripts.source(name)):
            used |= set(re.findall(r"'(\w+)'", args))
    assert used, "the pattern found the scripts' hash calls"
    assert used <= declared, used - declared
    assert set(Job.new("uploads/a/b.mp4", BURN).to_redis()) <= declared
