"""The stages a job runs, the priorities a stage reads in, and the roles a process can take,
declared once. The runtime, the CLI, pausing, the overload check and the stage workers read
them from here; which stages each kind of job runs is `kinds`.

Kept free of heavy imports: the CLI reads the roles before it knows what it will run.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from vidstream.core.errors import PermanentError


class Stage(StrEnum):
    """A step of a job's pipeline; each has its own streams and is run by the role of its name."""

    TRANSCRIBE = "transcribe"
    RENDER = "render"


class Priority(StrEnum):
    """Which jobs a stage takes first: high before normal before low, with a fairness guard
    (`state.consumer`) so lower ones still move under a steady load of higher ones."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


PRIORITIES = (Priority.HIGH, Priority.NORMAL, Priority.LOW)  # the order stages read them in


def parse_priority(value: object) -> Priority:
    """A priority as a client sent it; raise `PermanentError` naming the choices."""
    try:
        return Priority(str(value))
    except ValueError:
        raise PermanentError(
            "priority must be one of high, normal, low", code="invalid_request"
        ) from None


@dataclass(frozen=True, slots=True)
class Role:
    """What a process can run (`vidstream ROLE`, or every role with `vidstream dev`)."""

    name: str
    does: str  # for `vidstream --help`
    stage: Stage | None = None  # a worker role runs the stage of its name
    pausable: bool = False  # `vidstream pause ROLE` stops it taking work (the gateway: new jobs)


ROLES = (
    Role("gateway", "the REST API", pausable=True),
    Role("transcribe", "the Whisper worker", Stage.TRANSCRIBE, pausable=True),
    Role("render", "the FFmpeg worker", Stage.RENDER, pausable=True),
    Role("notifier", "the WebSocket server"),
)
ROLE_NAMES = tuple(role.name for role in ROLES)
PAUSABLE = tuple(role.name for role in ROLES if role.pausable)
