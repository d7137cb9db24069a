"""What a probe learns about a source file, as a plain value stored with the job."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class MediaInfo:
    duration: float
    format_name: str
    width: int
    height: int
    rotation: int  # the display rotation, counter-clockwise as FFmpeg reports it: 0/90/180/270
    video_codec: str
    audio_codec: str | None
    audio_channels: int
    sample_rate: int

    @property
    def display_size(self) -> tuple[int, int]:
        """The size of the picture as shown, after the rotation players apply."""
        if self.rotation in (90, 270):
            return self.height, self.width
        return self.width, self.height

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MediaInfo:
        return cls(
            duration=float(data["duration"]),
            format_name=str(data["format_name"]),
            width=int(data["width"]),
            height=int(data["height"]),
            rotation=int(data.get("rotation", 0)),
            video_codec=str(data["video_codec"]),
            audio_codec=None if data.get("audio_codec") is None else str(data["audio_codec"]),
            audio_channels=int(data.get("audio_channels", 0)),
            sample_rate=int(data.get("sample_rate", 0)),
        )
