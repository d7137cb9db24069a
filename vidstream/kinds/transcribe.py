"""The transcribe kind: a subtitle job without its video. Taken in as a subtitle job is
(`subtitle.intake`); its one stage is Whisper's (`transcribing`)."""

from __future__ import annotations

from vidstream.job.model import Stage
from vidstream.kinds.base import KindHandler
from vidstream.kinds.subtitle import intake
from vidstream.kinds.transcribing import transcribe, transcribe_piece

HANDLER = KindHandler(
    intake, {Stage.TRANSCRIBE: transcribe}, pieces={Stage.TRANSCRIBE: transcribe_piece}
)
