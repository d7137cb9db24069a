"""The word-level transcript: the source of truth from which SRT, VTT and ASS are made.

Times are seconds from the start of the source, never of a piece of it, so transcripts of ranges
of one source can later be merged by concatenating their segments.

A diarized transcript (`speakers`) numbers who says each word and segment from 1, in the order
they first speak; `speaker` is absent from the JSON where nobody was told apart, so a transcript
made without it reads and writes back the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MAX_SPEAKERS = 8  # told apart at most (`media.speakers`)

VERSION = 1
_KNOWN = frozenset({"version", "language", "duration", "model", "text", "segments"})


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    start: float
    end: float
    probability: float = 1.0
    speaker: int | None = None


@dataclass(frozen=True, slots=True)
class Segment:
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()
    speaker: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Segment:
        return cls(
            start=float(data["start"]),
            end=float(data["end"]),
            text=str(data["text"]).strip(),
            words=tuple(
                Word(
                    str(w["word"]).strip(),
                    float(w["start"]),
                    float(w["end"]),
                    float(w.get("probability", 1.0)),
                    _speaker(w.get("speaker")),
                )
                for w in data.get("words") or ()
                if str(w["word"]).strip()
            ),
            speaker=_speaker(data.get("speaker")),
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "text": self.text,
        }
        if self.speaker is not None:
            data["speaker"] = self.speaker
        data["words"] = [_word_dict(w) for w in self.words]
        return data


def _word_dict(w: Word) -> dict[str, Any]:
    data: dict[str, Any] = {
        "word": w.text,
        "start": round(w.start, 3),
        "end": round(w.end, 3),
        "probability": round(w.probability, 3),
    }
    if w.speaker is not None:
        data["speaker"] = w.speaker
    return data


def _speaker(value: object) -> int | None:
    """A speaker's number as stored (or as a client corrected it): a whole number from 1 to
    MAX_SPEAKERS; anything else (a name, Infinity, 10**50) is no speaker rather than an error,
    and never reaches a caption as more than one short number."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = int(value)
    except (ValueError, OverflowError):
        return None
    return number if 1 <= number <= MAX_SPEAKERS else None


@dataclass(frozen=True, slots=True)
class Transcript:
    language: str
    duration: float
    segments: tuple[Segment, ...] = ()
    model: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.text)

    def to_json(self) -> bytes:
        doc = {
            "version": VERSION,
            "language": self.language,
            "duration": round(self.duration, 3),
            "model": self.model,
            **self.meta,
            "text": self.text,
            "segments": [s.to_dict() for s in self.segments],
        }
        return json.dumps(doc, ensure_ascii=False, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Transcript:
        doc = json.loads(raw)
        return cls(
            language=str(doc.get("language") or ""),
            duration=float(doc.get("duration") or 0.0),
            segments=tuple(Segment.from_dict(s) for s in doc.get("segments", ())),
            model=str(doc.get("model") or ""),
            meta={k: v for k, v in doc.items() if k not in _KNOWN},
        )
