"""structlog set-up: one line per event, JSON when not on a terminal, context bound as fields."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "info", fmt: str = "auto", *, keep_with_jobs: bool = True) -> None:
    """Configure structlog (and the stdlib loggers of our libraries) once per process.
    `keep_with_jobs=False` (the client commands) skips the copy of job lines kept in Redis, and
    with it the imports that cost a command-line client a quarter of a second."""
    json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    if keep_with_jobs:
        # Imported here: joblogs logs through this module, and needs Redis and the job model.
        from vidstream.joblogs import capture

        processors.append(capture)  # a copy of each line about a job, kept with the job
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_StderrLogger,
        cache_logger_on_first_use=True,
    )
    # Libraries (aiohttp access log, websockets) log through the stdlib; keep them quiet and
    # on the same stream.
    logging.basicConfig(
        level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(message)s"
    )


def get(**context: object) -> structlog.stdlib.BoundLogger:
    """A logger with `context` bound as fields on every line."""
    # Lazy: the context binds on first use, so module-level loggers made before `configure()`
    # still follow the configuration.
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(**context)
    return logger


class _StderrLogger:
    """Writes each line to whatever `sys.stderr` is at that moment (test runners swap it)."""

    def __init__(self, *args: object) -> None:
        pass

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg
