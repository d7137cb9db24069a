"""The `vidstream` command: run roles, submit videos, inspect the system."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from vidstream.core import malloc
from vidstream.core.errors import ConfigError
from vidstream.core.settings import Settings
from vidstream.job.stages import PAUSABLE, ROLE_NAMES, ROLES

# Commands that only talk to the gateway: they start without importing the server's modules
# (structlog, aiohttp, the roles), which took 220 of their 330 ms to start.
CLIENT_COMMANDS = ("submit", "jobs", "get", "logs")
# The caption presets (`compose.caption_style.Preset`, which tests/test_models.py checks this
# against): named here so that `vidstream` starts without importing pydantic.
PRESETS = ("default", "boxed", "bold", "top")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidstream", description="Subtitled videos at scale.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dev = sub.add_parser("dev", help="run every role in one process (starts Redis if needed)")
    dev.add_argument("--concurrency", type=int, help="jobs per worker role at once (default 1)")
    for role in ROLES:
        p = sub.add_parser(role.name, help=f"run {role.does}")
        p.add_argument("--concurrency", type=int, help="jobs at once (worker roles; default 1)")
    submit = sub.add_parser("submit", help="upload videos and create a job for each")
    submit.add_argument("videos", type=Path, nargs="+", metavar="VIDEO")
    _gateway_options(submit)
    submit.add_argument(
        "--no-burn", action="store_true", help="add a subtitle track instead of burning"
    )
    submit.add_argument("--language", help="spoken language, e.g. en (default en; 'auto' detects)")
    submit.add_argument("--model", help="the Whisper model (GET /v1/models; default the gateway's)")
    submit.add_argument(
        "--translate",
        action="store_true",
        help="captions in English, whatever is spoken (a multilingual model)",
    )
    submit.add_argument(
        "--max-chars",
        type=_between(10, 80),
        metavar="N",
        help="longest caption line, in characters (10 to 80; default 42)",
    )
    submit.add_argument(
        "--max-lines", type=_between(1, 3), metavar="N", help="lines a caption may have (1 to 3)"
    )
    submit.add_argument(
        "--position",
        type=_position,
        help="where captions sit: bottom, top, middle, or X,Y (fractions of the picture, 0-1)",
    )
    submit.add_argument(
        "--style",
        choices=PRESETS,
        help="the captions' look (a preset; the job's fields adjust it: see docs/api.md)",
    )
    submit.add_argument("--karaoke", action="store_true", help="highlight each word as spoken")
    submit.add_argument(
        "--speakers", type=_speakers, metavar="N", help="tell N speakers apart (1 to 8), or 'auto'"
    )
    submit.add_argument(
        "--speaker-labels",
        action="store_true",
        help="start a caption with [Speaker N] where the speaker changes",
    )
    submit.add_argument(
        "--kind", help="what to make of each video: a kind the gateway makes from a video "
        "(listed by GET /v1/kinds; by default, the gateway's default kind)",
    )  # fmt: skip
    submit.add_argument("--wait", action="store_true", help="follow the jobs until they end")
    get = sub.add_parser("get", help="download a job's outputs into a folder")
    get.add_argument("job_id", metavar="JOB")
    get.add_argument("-o", "--output", type=Path, default=Path("."), metavar="DIR",
                     help="where to save them (default: here)")  # fmt: skip
    _gateway_options(get)
    jobs = sub.add_parser("jobs", help="your recent jobs, newest first")
    jobs.add_argument("--limit", type=int, default=20)
    _gateway_options(jobs)
    jobs.add_argument("--json", action="store_true", help="print JSON, for scripts")
    job_logs = sub.add_parser("logs", help="a job's log lines, from every role")
    job_logs.add_argument("job_id")
    _gateway_options(job_logs)
    job_logs.add_argument("--follow", action="store_true", help="go on until the job has ended")
    job_logs.add_argument("--json", action="store_true", help="one JSON object per line")
    keys = sub.add_parser("keys", help="API keys: create, list, revoke")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = keys_sub.add_parser("create", help="add a key; prints it once")
    create.add_argument("--tenant", required=True, help="the tenant the key acts for")
    create.add_argument("--admin", action="store_true", help="may also use operator routes")
    create.add_argument("--label", default="", help="a note to recognise the key by")
    keys_list = keys_sub.add_parser("list", help="list keys (ids and tenants; never the keys)")
    keys_list.add_argument("--json", action="store_true", help="print JSON, for scripts")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    secret = keys_sub.add_parser(
        "webhook-secret", help="the secret a tenant's webhooks are signed with"
    )
    secret.add_argument("--tenant", required=True)
    status = sub.add_parser("status", help="queue depth, pending and consumers; or one job")
    status.add_argument("job_id", nargs="?")
    status.add_argument("--json", action="store_true", help="print JSON, for scripts")
    workers = sub.add_parser("workers", help="the live workers: what each runs, since when")
    workers.add_argument("--json", action="store_true", help="print JSON, for scripts")
    stats = sub.add_parser("stats", help="per stage: queue, throughput, durations; jobs by status")
    stats.add_argument("--json", action="store_true", help="print JSON, for scripts")
    for action, text in (("pause", "take no new work"), ("resume", "take work again")):
        p = sub.add_parser(action, help=f"a role's processes {text} (gateway: new jobs)")
        p.add_argument("role", choices=PAUSABLE)
    drain = sub.add_parser("drain", help="wait until nothing is running (for deploys)")
    drain.add_argument("--timeout", type=float, default=3600.0, help="give up after (s)")
    dlq = sub.add_parser("dlq", help="jobs that ran out of attempts")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    dlq_list = dlq_sub.add_parser("list", help="list dead-lettered jobs, newest first")
    dlq_list.add_argument("--limit", type=int, default=50)
    dlq_list.add_argument("--json", action="store_true", help="print JSON, for scripts")
    dlq_replay = dlq_sub.add_parser("replay", help="run a failed job again")
    dlq_replay.add_argument("job_id")
    return parser


def _gateway_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gateway", help="gateway URL (default: PUBLIC_URL or the local one)")
    parser.add_argument(
        "--api-key", default=os.environ.get("VIDSTREAM_API_KEY"),
        help="API key for the gateway (default: $VIDSTREAM_API_KEY)",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    malloc.pin_mmap_threshold()
    try:
        settings = Settings.from_env()
        if getattr(args, "concurrency", None) is not None:
            if not 1 <= args.concurrency <= 64:
                raise ConfigError("--concurrency must be between 1 and 64")
            settings = settings.replace(concurrency=args.concurrency)
    except ConfigError as exc:
        print(f"vidstream: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command not in CLIENT_COMMANDS:  # a client command logs nothing: no structlog
        _configure_logs(settings, serving=args.command == "dev" or args.command in ROLE_NAMES)
    try:
        return _run(_command(args, settings))
    except ConfigError as exc:
        print(f"vidstream: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _configure_logs(settings: Settings, *, serving: bool) -> None:
    import structlog

    from vidstream.core import logs

    extra: tuple[structlog.typing.Processor, ...] = ()
    if serving:  # a copy of each line about a job, kept with the job
        from vidstream.ops.joblogs import capture

        extra = (capture,)
    logs.configure(settings.log_level, settings.log_format, extra=extra)


def _command(args: argparse.Namespace, settings: Settings) -> Coroutine[Any, Any, int]:
    if args.command == "dev" or args.command in ROLE_NAMES:
        # Only the processes that serve import the roles: a client command starts faster.
        from vidstream import runtime

        roles = ROLE_NAMES if args.command == "dev" else (args.command,)
        return runtime.serve(settings, roles, dev=args.command == "dev")
    if args.command in ("submit", "jobs", "get"):
        return _submit(args, settings)
    if args.command == "logs":
        from vidstream.cli import logs as logscli

        return logscli.main(args, settings, sys.stdout)
    if args.command == "keys":
        return _keys(args, settings)
    return _admin(args, settings)


async def _keys(args: argparse.Namespace, settings: Settings) -> int:
    from vidstream.cli import keys as keyscli

    if args.keys_command == "create":
        return keyscli.create(settings, args.tenant, args.admin, args.label, sys.stdout,
                              sys.stderr)  # fmt: skip
    if args.keys_command == "list":
        return keyscli.list_keys(settings, sys.stdout, as_json=args.json)
    if args.keys_command == "revoke":
        return keyscli.revoke(settings, args.key_id, sys.stdout)
    return keyscli.webhook_secret(settings, args.tenant, sys.stdout)


async def _submit(args: argparse.Namespace, settings: Settings) -> int:
    from http.client import HTTPException

    from vidstream.cli import client
    from vidstream.cli.client import SubmitError

    gateway = args.gateway or settings.gateway_url
    try:
        if args.command == "get":
            from vidstream.cli.get import get

            return await get(args.job_id, gateway, args.api_key, args.output)
        if args.command == "jobs":
            jobs = await client.recent_jobs(gateway, args.api_key, args.limit)
            from vidstream.ops.tables import print_jobs

            return print_jobs(jobs, sys.stdout, as_json=args.json)
        missing = [str(v) for v in args.videos if not v.is_file()]
        if missing:
            print(f"vidstream: no such file: {', '.join(missing)}", file=sys.stderr)
            return 2
        return await client.submit(
            args.videos, gateway, _job_fields(args), wait=args.wait, kind=args.kind,
            api_key=args.api_key,
        )  # fmt: skip
    except (SubmitError, OSError, HTTPException) as exc:
        print(f"vidstream: {exc}", file=sys.stderr)
        return 1


def _between(low: int, high: int) -> Callable[[str], int]:
    """An option's whole number, checked before anything is sent (the gateway checks it too)."""

    def parse(text: str) -> int:
        if not text.strip().isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"a whole number from {low} to {high}")
        return int(text)

    return parse


def _speakers(text: str) -> str | int:
    if text == "auto":
        return text
    return _between(1, 8)(text)


def _position(text: str) -> str:
    if text in ("bottom", "top", "middle"):
        return text
    x, _, y = text.partition(",")
    try:
        if all(0 <= float(v) <= 1 for v in (x, y)):
            return text
    except ValueError:
        pass
    raise argparse.ArgumentTypeError("bottom, top, middle, or X,Y with each from 0 to 1")


def _job_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The job request's fields `vidstream submit`'s options ask for (the gateway checks them)."""
    given = {
        "burn_subtitles": not args.no_burn,
        "language": args.language,
        "model": args.model,
        "task": "translate" if args.translate else None,
        "max_chars_per_line": args.max_chars,
        "max_lines": args.max_lines,
        "position": args.position,
        "style": args.style,
        "karaoke": args.karaoke or None,
        "speakers": args.speakers,
        "speaker_labels": args.speaker_labels or None,
    }
    return {name: value for name, value in given.items() if value is not None}


async def _admin(args: argparse.Namespace, settings: Settings) -> int:
    from vidstream.ops import admin
    from vidstream.services import connect_redis
    from vidstream.state.jobstore import JobStore
    from vidstream.state.keys import Keys

    redis = connect_redis(settings)
    keys = Keys(settings.redis_prefix)
    jobs = JobStore(redis, keys, ttl_s=settings.job_retention_s,
                    failed_ttl_s=settings.failed_job_retention_s,
                    events_ttl_s=settings.event_retention_s)  # fmt: skip
    try:
        if args.command == "status":
            return await admin.print_status(redis, keys, args.job_id, sys.stdout, args.json)
        if args.command == "workers":
            return await admin.print_workers(redis, keys, sys.stdout, args.json)
        if args.command == "stats":
            return await admin.print_stats(redis, keys, sys.stdout, args.json)
        if args.command in ("pause", "resume", "drain"):
            from vidstream.ops import pausing

            return await pausing.command(redis, keys, args.command, getattr(args, "role", None),
                                         getattr(args, "timeout", 0.0), sys.stdout)  # fmt: skip
        if args.dlq_command == "list":
            return await admin.print_dead_letters(jobs, args.limit, sys.stdout, args.json)
        return await admin.replay_job(jobs, args.job_id, sys.stdout)
    finally:
        await redis.aclose()


def _run(coro: Coroutine[Any, Any, int]) -> int:
    if os.name == "posix":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


if __name__ == "__main__":
    raise SystemExit(main())
