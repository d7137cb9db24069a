#!/usr/bin/env python3
"""The processes bench/bus.py starts: one job bus's worker, enqueuer or trickle sender.

    python bench/bus_peers.py PEER ROLE --ns NS --out DIR [options]

PEER is `vidstream` (run with .venv/bin/python) or one of arq, saq, rq, celery, taskiq, dramatiq
(run with .venv-bench/bin/python). Every peer runs the same job, a no-op that notes when it
started (`Tally`), and keeps all its keys under names containing NS, so the harness removes
exactly what a run wrote.

ROLE:
  worker    one worker process, until SIGTERM. The no-op job notes its start; the first one
            writes DIR/started, the --expect'th one writes DIR/done.json: the Unix times of the
            first start and the last end, the process's CPU seconds in between, and each job's
            enqueue-to-start latency.
  enqueue   --n jobs from this process: the first half one awaited call at a time, the second
            half --in-flight at once (concurrent calls, or the library's bulk call) where the API
            has a way; prints JSON with the seconds each half took.
  trickle   one warm-up job, then (once DIR/started shows the worker ran it) --rate jobs a
            second for --seconds, each stamped with time.time() just before its enqueue call.
  versions  prints the versions of the installed libraries as JSON.

Job timestamps are time.time() of this machine in both processes, so latencies need no clock
sync. vidstream's job is stamped by `Job.new` (its created_at), as the gateway's are.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import secrets
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

PEERS = ("vidstream", "arq", "saq", "rq", "celery", "taskiq", "dramatiq")
LIBRARIES = (*PEERS, "kombu", "taskiq-redis", "redis", "hiredis", "uvloop")
WARMUP_KEY = "uploads/bench-bus/warmup"  # vidstream: the trickle's warm-up job, not counted
NOOP_KEY = "uploads/bench-bus/noop"  # never read: the no-op stage ignores its source


# --- what the no-op job records ------------------------------------------------------------------


class Tally:
    """Counts the jobs this worker process ran, and how long each waited to start.

    Called from the job itself, so the figures do not depend on any library's own bookkeeping.
    A lock, because Dramatiq runs jobs on threads; the cost is the same for every peer.
    """

    def __init__(self) -> None:
        self.out: Path | None = None
        self.expect = 0
        self.count = 0
        self.first = 0.0
        self.cpu0 = 0.0
        self.latencies: list[float] = []
        self.lock = threading.Lock()

    def setup(self, out: Path, expect: int) -> None:
        self.out, self.expect = out, expect

    def start(self, enqueued_at: float) -> None:
        """A job starts; `enqueued_at` is 0 for a warm-up job (no latency recorded)."""
        now = time.time()
        with self.lock:
            if enqueued_at > 0:
                self.latencies.append(now - enqueued_at)
            if not self.first:
                self.first, self.cpu0 = now, time.process_time()
                _write(self._path("started"), {"at": now})

    def end(self) -> None:
        """A job ended (for vidstream: its completion is recorded in Redis)."""
        with self.lock:
            self.count += 1
            if self.count != self.expect:
                return
            done = {
                "first_start": self.first,
                "last_end": time.time(),
                "count": self.count,
                "cpu_s": time.process_time() - self.cpu0,
                "latencies": self.latencies,
                "pid": os.getpid(),
            }
        _write(self._path("done.json"), done)

    def _path(self, name: str) -> Path:
        assert self.out is not None, "Tally.setup() first"
        return self.out / name


TALLY = Tally()


def _write(path: Path, data: Any) -> None:
    # Written whole, then renamed: the harness polls for the file and must never read half of it.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.rename(path)


def noop(enqueued_at: float) -> None:
    """The job every peer runs: nothing but the tally."""
    TALLY.start(enqueued_at)
    TALLY.end()


async def anoop(enqueued_at: float) -> None:
    TALLY.start(enqueued_at)
    TALLY.end()


# --- shared enqueue and trickle loops ------------------------------------------------------------

Send = Callable[[int, float], Any]  # (index, time stamp) -> the library's enqueue call


def halves(n: int) -> tuple[int, int]:
    return n // 2, n - n // 2


def enqueue_sync(
    send: Send, n: int, bulk: Callable[[list[tuple[int, float]]], Any] | None, in_flight: int
) -> dict[str, Any]:
    seq, rest = halves(n) if bulk else (n, 0)
    started = time.perf_counter()
    for i in range(seq):
        send(i, time.time())
    report: dict[str, Any] = {"seq_n": seq, "seq_s": time.perf_counter() - started}
    if bulk and rest:
        started = time.perf_counter()
        for lo in range(seq, n, in_flight):
            bulk([(i, time.time()) for i in range(lo, min(lo + in_flight, n))])
        report.update(conc_n=rest, conc_s=time.perf_counter() - started)
    return report


async def enqueue_async(
    send: Callable[[int, float], Awaitable[Any]], n: int, in_flight: int
) -> dict[str, Any]:
    seq, rest = halves(n)
    started = time.perf_counter()
    for i in range(seq):
        await send(i, time.time())
    report: dict[str, Any] = {"seq_n": seq, "seq_s": time.perf_counter() - started}
    # `in_flight` calls at once, each a task that takes the next index: the library's own
    # connection pool decides how they share connections, as in an application.
    indices = iter(range(seq, n))

    async def lane() -> None:
        for i in indices:
            await send(i, time.time())

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(in_flight)))
    report.update(conc_n=rest, conc_s=time.perf_counter() - started)
    return report


def _wait_started(out: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not (out / "started").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the worker never ran the warm-up job")
        time.sleep(0.01)


def trickle_sync(send: Send, args: argparse.Namespace) -> dict[str, Any]:
    send(-1, 0.0)  # the warm-up job: the worker is up and connected once it ran
    _wait_started(args.out)
    time.sleep(0.5)
    count, late = int(args.rate * args.seconds), 0.0
    t0 = time.monotonic()
    for i in range(count):
        due = t0 + i / args.rate
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        late = max(late, time.monotonic() - due)
        send(i, time.time())
    return {"sent": count, "seconds": time.monotonic() - t0, "max_late_s": late}


async def trickle_async(
    send: Callable[[int, float], Awaitable[Any]], args: argparse.Namespace
) -> dict[str, Any]:
    await send(-1, 0.0)
    await asyncio.to_thread(_wait_started, args.out)
    await asyncio.sleep(0.5)
    count, late = int(args.rate * args.seconds), 0.0
    t0 = time.monotonic()
    for i in range(count):
        due = t0 + i / args.rate
        if (wait := due - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        late = max(late, time.monotonic() - due)
        await send(i, time.time())
    return {"sent": count, "seconds": time.monotonic() - t0, "max_late_s": late}


def _until_sigterm() -> threading.Event:
    """An event set by SIGTERM or SIGINT, for workers that run on threads of their own."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _log_level(args: argparse.Namespace, cli_default: int) -> int:
    """Each library logs as its own command-line worker does by default, unless --quiet-logs."""
    return logging.WARNING if args.quiet_logs else cli_default


# --- vidstream -----------------------------------------------------------------------------------


def _vidstream_env(args: argparse.Namespace) -> None:
    # The settings a deployment would give `vidstream transcribe`, read by Settings.from_env().
    os.environ.update(
        REDIS_URL=args.redis_url,
        REDIS_PREFIX=args.ns,
        VIDSTREAM_DATA_DIR=str(args.out / "data"),
        SECRET_KEY=secrets.token_hex(16),
        LOG_LEVEL="warning" if args.quiet_logs else "info",
        LOG_FORMAT="json",  # what `auto` picks when stderr is not a terminal, as here
    )


def vidstream_worker(args: argparse.Namespace) -> int:
    """`vidstream transcribe --concurrency C`, its transcribe actor swapped for a no-op one.

    Everything else is the product's own path: cli.main -> runtime.serve -> Stack (Redis client,
    maintenance, job-log shipper) -> Worker (slot, consumer group, lease keeper, registry,
    control listener) -> per entry: XREADGROUP, HGETALL, the Claim transition, process(), the
    FinishStage transition (completed, in Lua), XACK, the run log.
    """
    from vidstream import runtime
    from vidstream.actors import transcribe
    from vidstream.actors.run import Run
    from vidstream.actors.worker import Worker
    from vidstream.cli.main import main as cli
    from vidstream.job.model import Job, Stage

    class NoopTranscribeWorker(Worker):
        """The transcribe stage with nothing to do: finish at once, with no outputs."""

        stage = Stage.TRANSCRIBE

        async def process(self, job: Job, workdir: Path, run: Run) -> None:
            TALLY.start(0.0 if job.source_key == WARMUP_KEY else job.created_at)
            await run.finish({})  # Kind.TRANSCRIBE has one stage: this completes the job
            TALLY.end()

    _vidstream_env(args)
    # The one change to the product's path. runtime.Stack builds the transcribe role from the
    # name `TranscribeWorker`, looked up in actors/transcribe.py when the role starts (or, in
    # older versions, imported into runtime.py): there is no registry of stage actors to add
    # one to, so the name is pointed at the no-op actor in both places.
    transcribe.TranscribeWorker = NoopTranscribeWorker  # type: ignore[misc]
    if hasattr(runtime, "TranscribeWorker"):
        runtime.TranscribeWorker = NoopTranscribeWorker
    return cli.main(["transcribe", "--concurrency", str(args.concurrency)])


def _vidstream_store(args: argparse.Namespace) -> tuple[Any, Any]:
    """A Redis client and job store built as the gateway builds them."""
    from vidstream.core.settings import Settings
    from vidstream.services import connect_redis
    from vidstream.state.jobstore import JobStore
    from vidstream.state.keys import Keys

    _vidstream_env(args)
    settings = Settings.from_env()
    redis = connect_redis(settings)
    return redis, JobStore(
        redis,
        Keys(settings.redis_prefix),
        ttl_s=settings.job_retention_s,
        failed_ttl_s=settings.failed_job_retention_s,
        events_ttl_s=settings.event_retention_s,
    )


def vidstream_client(args: argparse.Namespace, role: str) -> dict[str, Any]:
    import uvloop

    from vidstream.job.model import Job, Kind, Options

    async def main() -> dict[str, Any]:
        redis, jobs = _vidstream_store(args)

        # What POST /v1/jobs does once the request is validated: Job.new, then JobStore.create
        # (one Lua step: the job hash, its `queued` event, the entry on the stage's stream).
        async def send(i: int, _at: float) -> None:
            key = WARMUP_KEY if i < 0 else NOOP_KEY
            await jobs.create(Job.new(key, Options(), "bench", Kind.TRANSCRIBE))

        try:
            if role == "enqueue":
                return await enqueue_async(send, args.n, args.in_flight)
            return await trickle_async(send, args)
        finally:
            await redis.aclose()

    return uvloop.run(main())


# --- arq -----------------------------------------------------------------------------------------


async def arq_noop(ctx: dict[str, Any], enqueued_at: float) -> None:
    TALLY.start(enqueued_at)
    TALLY.end()


def arq_worker(args: argparse.Namespace) -> int:
    import logging.config

    import uvloop
    from arq.connections import RedisSettings
    from arq.logs import default_log_config
    from arq.worker import Worker, func

    # As the `arq` command does: INFO logging (a line per job start and end), signals handled. The
    # poll delay is the one change: at its default (0.5 s) a drain takes at most 100 jobs
    # (queue_read_limit) per poll, 200 jobs/s, and an idle worker sees a job ~250 ms late.
    logging.config.dictConfig(default_log_config(verbose=False))
    logging.getLogger("arq").setLevel(_log_level(args, logging.INFO))
    asyncio.set_event_loop(uvloop.new_event_loop())  # arq's Worker takes the current loop
    worker = Worker(
        functions=[func(arq_noop, name="noop")],
        queue_name=args.ns,
        redis_settings=RedisSettings.from_dsn(args.redis_url),
        max_jobs=args.concurrency,
        poll_delay=0.01,
    )
    worker.run()
    return 0


def arq_client(args: argparse.Namespace, role: str) -> dict[str, Any]:
    import uvloop
    from arq import create_pool
    from arq.connections import RedisSettings

    async def main() -> dict[str, Any]:
        pool = await create_pool(RedisSettings.from_dsn(args.redis_url), default_queue_name=args.ns)

        async def send(i: int, at: float) -> None:
            # A job id of our own only so that every key holds the run's namespace.
            await pool.enqueue_job("noop", at, _job_id=f"{args.ns}-{i}")

        try:
            if role == "enqueue":
                return await enqueue_async(send, args.n, args.in_flight)
            return await trickle_async(send, args)
        finally:
            await pool.aclose()

    return uvloop.run(main())


# --- saq -----------------------------------------------------------------------------------------


async def saq_noop(ctx: dict[str, Any], *, enqueued_at: float) -> None:
    TALLY.start(enqueued_at)
    TALLY.end()


def saq_worker(args: argparse.Namespace) -> int:
    import uvloop
    from saq import Queue, Worker

    logging.basicConfig(level=_log_level(args, logging.WARNING))  # `saq` without -v

    async def main() -> None:
        queue = Queue.from_url(args.redis_url, name=args.ns)
        worker = Worker(queue, functions=[("noop", saq_noop)], concurrency=args.concurrency)
        await queue.connect()
        try:
            await worker.start()  # handles SIGTERM itself
        finally:
            await queue.disconnect()

    uvloop.run(main())
    return 0


def saq_client(args: argparse.Namespace, role: str) -> dict[str, Any]:
    import uvloop
    from saq import Queue

    async def main() -> dict[str, Any]:
        queue = Queue.from_url(args.redis_url, name=args.ns)
        await queue.connect()

        async def send(i: int, at: float) -> None:
            await queue.enqueue("noop", enqueued_at=at)

        try:
            if role == "enqueue":
                return await enqueue_async(send, args.n, args.in_flight)
            return await trickle_async(send, args)
        finally:
            await queue.disconnect()

    return uvloop.run(main())


# --- rq ------------------------------------------------------------------------------------------


def rq_worker(args: argparse.Namespace) -> int:
    from redis import Redis
    from rq import Queue, SimpleWorker

    # SimpleWorker runs each job in the worker process: rq's default Worker forks a child per
    # job, which would measure fork() rather than the queue.
    redis = Redis.from_url(args.redis_url)
    worker = SimpleWorker([Queue(args.ns, connection=redis)], connection=redis, name=f"{args.ns}-w")
    level = "WARNING" if args.quiet_logs else "INFO"  # `rq worker` logs a line per job at INFO
    worker.work(logging_level=level)
    return 0


def rq_client(args: argparse.Namespace, role: str) -> dict[str, Any]:
    from redis import Redis
    from rq import Queue

    redis = Redis.from_url(args.redis_url)
    queue = Queue(args.ns, connection=redis)
    job = noop  # stored by name, `bus_peers.noop` (see the end of this file), for the worker

    def send(i: int, at: float) -> None:
        queue.enqueue(job, at, job_id=f"{args.ns}-{i}")

    def bulk(batch: list[tuple[int, float]]) -> None:
        # enqueue_many: one pipeline per batch.
        queue.enqueue_many(
            [Queue.prepare_data(job, (at,), job_id=f"{args.ns}-{i}") for i, at in batch]
        )

    if role == "enqueue":
        return enqueue_sync(send, args.n, bulk, args.in_flight)
    return trickle_sync(send, args)


# --- celery --------------------------------------------------------------------------------------


def celery_app(args: argparse.Namespace) -> tuple[Any, Any]:
    from celery import Celery

    app = Celery("bench_bus", broker=args.redis_url)
    app.conf.update(
        task_default_queue=args.ns,
        # Every key kombu writes carries the run's namespace, so cleaning up is exact.
        broker_transport_options={"global_keyprefix": f"{args.ns}:"},
        broker_connection_retry_on_startup=True,
    )
    return app, app.task(name="noop")(noop)


def celery_worker(args: argparse.Namespace) -> int:
    app, _ = celery_app(args)
    level = "WARNING"  # celery worker's default: no line per job, --quiet-logs or not
    # One process: the solo pool runs jobs in the worker itself (prefork's children would each
    # be another process). Gossip, mingle and heartbeat talk to other workers: there are none.
    app.worker_main(
        [
            "worker",
            "--pool=solo",
            f"--loglevel={level}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-Q",
            args.ns,
            "-n",
            f"{args.ns}@%h",
        ]
    )
    return 0


def celery_client(args: argparse.Namespace, role: str) -> dict[str, Any]:
    _, task = celery_app(args)

    def send(i: int, at: float) -> None:
        task.apply_async((at,))

    if role == "enqueue":
        return enqueue_sync(send, args.n, None, args.in_flight)  # no bulk call in Celery
    return trickle_sync(send, args)


# --- taskiq --------------------------------------------------------------------------------------


def taskiq_broker(args: argparse.Namespace) -> tuple[Any, Any]:
    from taskiq_redis import RedisStreamBroker

    # The stream broker: XREADGROUP and XACK, like vidstream. consumer_id "0": a group made now
    # reads the backlog too (the default "$" would skip jobs enqueued before the worker).
    broker = RedisStreamBroker(
        args.redis_url, queue_name=args.ns, consumer_group_name=args.ns, consumer_id="0"
    )
    return broker, broker.task(task_name="noop")(anoop)


def taskiq_worker(args: argparse.Namespace) -> int:
    import uvloop
    from taskiq.api import run_receiver_task

    # `taskiq worker` logs at INFO: a line per job ("Executing task ...").
    logging.basicConfig(level=_log_level(args, logging.INFO))
    broker, _ = taskiq_broker(args)

    async def main() -> None:
        broker.is_worker_process = True
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # What one `taskiq worker --workers 1` process runs, with --max-async-tasks C.
        receiving = asyncio.create_task(
            run_receiver_task(broker, max_async_tasks=args.concurrency, run_startup=True)
        )
        await stop.wait()
        receiving.cancel()
        await asyncio.gather(receiving, return_exceptions=True)
        await broker.shutdown()

    uvloop.run(main())
    return 0


def taskiq_client(args: argparse.Namespace, role: str) -> dict[str, Any]:
    import uvloop

    broker, task = taskiq_broker(args)

    async def main() -> dict[str, Any]:
        await broker.startup()

        async def send(i: int, at: float) -> None:
            await task.kiq(at)

        try:
            if role == "enqueue":
                return await enqueue_async(send, args.n, args.in_flight)
            return await trickle_async(send, args)
        finally:
            await broker.shutdown()

    return uvloop.run(main())


# --- dramatiq ------------------------------------------------------------------------------------


def dramatiq_actor(args: argparse.Namespace) -> tuple[Any, Any]:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=args.redis_url, namespace=args.ns)
    dramatiq.set_broker(broker)  # before the actor: it binds to the broker set now
    return broker, dramatiq.actor(actor_name="noop")(noop)


def dramatiq_worker(args: argparse.Namespace) -> int:
    from dramatiq import Worker

    logging.basicConfig(level=_log_level(args, logging.INFO))  # `dramatiq` logs at INFO
    broker, _ = dramatiq_actor(args)
    # What one process of `dramatiq --processes 1 --threads C` runs.
    worker = Worker(broker, worker_threads=args.concurrency)
    stop = _until_sigterm()
    worker.start()
    stop.wait()
    worker.stop()
    broker.close()
    return 0


def dramatiq_client(args: argparse.Namespace, role: str) -> dict[str, Any]:
    broker, actor = dramatiq_actor(args)

    def send(i: int, at: float) -> None:
        actor.send(at)

    try:
        if role == "enqueue":
            return enqueue_sync(send, args.n, None, args.in_flight)  # no bulk call either
        return trickle_sync(send, args)
    finally:
        broker.close()


# --- entry point ---------------------------------------------------------------------------------


def versions(names: Iterable[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    cli = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    cli.add_argument("peer", choices=[*PEERS, "all"])
    cli.add_argument("role", choices=["worker", "enqueue", "trickle", "versions"])
    cli.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    cli.add_argument("--ns", default="bbus-dev", help="namespace: queue name, key prefix")
    cli.add_argument("--out", type=Path, default=Path("."), help="where the worker's files go")
    cli.add_argument("--n", type=int, default=1000, help="jobs to enqueue")
    cli.add_argument("--expect", type=int, default=1000, help="jobs the worker will run")
    cli.add_argument("--concurrency", type=int, default=1, help="jobs a worker runs at once")
    cli.add_argument("--in-flight", type=int, default=64, help="concurrent enqueue calls")
    cli.add_argument("--rate", type=float, default=200.0, help="trickle: jobs a second")
    cli.add_argument("--seconds", type=float, default=5.0, help="trickle: for how long")
    cli.add_argument("--quiet-logs", action="store_true", help="every library at WARNING")
    return cli.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.role == "versions":
        print(json.dumps({"python": platform.python_version(), **versions(LIBRARIES)}))
        return 0
    module = sys.modules[__name__]
    if args.role == "worker":
        TALLY.setup(args.out, args.expect)
        result: int = getattr(module, f"{args.peer}_worker")(args)
        return result
    report = getattr(module, f"{args.peer}_client")(args, args.role)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    # Run as the module `bus_peers`, not `__main__`: rq and Celery name the job function by its
    # module, and the worker must import the same one (and share its TALLY).
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bus_peers

    sys.exit(bus_peers.main())
