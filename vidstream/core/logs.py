"""structlog set-up: one line per event, JSON when not on a terminal, context bound as fields."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import structlog


def configure(
    level: str = "info", fmt: str = "auto", *, extra: Sequence[structlog.typing.Processor] = ()
) -> None:
    """Configure structlog (and the stdlib loggers of our libraries) once per process. `extra`
    processors run before the line is rendered: the serving processes pass `ops.joblogs`'s
    `capture`, which keeps a copy of each line about a job with the job (the client commands
    do without it, and without the imports that would cost them a quarter of a second)."""
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
        *extra,
    ]
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
