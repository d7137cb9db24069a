"""The code of each kind of job: how the gateway takes its requests in, and the work of each
stage of its pipeline. Which module serves a kind is declared with the kind (`job.kinds`,
`KindSpec.handler`); each exports a `HANDLER` (`base.KindHandler`).

Below the roles that host them: the gateway and the stage workers call in, giving what a
handler needs (`base.Incoming`, `base.Tools`, `base.StageRun`); a handler never reaches up.
"""

from __future__ import annotations

import functools
import importlib

from vidstream.job.kinds import KINDS, Kind
from vidstream.job.stages import Stage
from vidstream.kinds.base import KindHandler, PieceWork, StageWork


@functools.cache
def handler(kind: Kind) -> KindHandler:
    """The code of `kind`, imported the first time it is asked for (the gateway and each worker
    load them all as they start: `load_all`)."""
    found = getattr(importlib.import_module(KINDS[kind].handler), "HANDLER", None)
    if not isinstance(found, KindHandler):
        raise LookupError(f"{KINDS[kind].handler} has no HANDLER for the {kind} kind")
    return found


def stage_work(kind: Kind, stage: Stage) -> StageWork:
    """What runs `stage` of a `kind` job."""
    work = handler(kind).stages.get(stage)
    if work is None:
        raise LookupError(f"the {kind} kind declares no work for its {stage} stage")
    return work


def piece_work(kind: Kind, stage: Stage) -> PieceWork | None:
    """What works one piece of a fanned-out `stage` of a `kind` job (None: it never fans out)."""
    return handler(kind).pieces.get(stage)


def load_all() -> None:
    """Import every kind's code now, so that no request or job waits for an import, and a kind
    declared without its code stops the process from starting."""
    for kind in KINDS:
        handler(kind)
