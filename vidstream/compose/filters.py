"""The small vocabulary the compose graph is written in: labelled filter chains, numbers and
colours as FFmpeg reads them, and frames as times. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction


def num(value: float | Fraction) -> str:
    """A number as a filter option: no exponent, no trailing zeros."""
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def colour(value: str) -> str:
    """A timeline colour (#RGB, #RRGGBB, #RRGGBBAA) as FFmpeg's `0xRRGGBB@alpha`."""
    hex_ = value.lstrip("#")
    if len(hex_) == 3:
        hex_ = "".join(ch * 2 for ch in hex_)
    alpha = int(hex_[6:8], 16) / 255 if len(hex_) == 8 else 1.0
    return f"0x{hex_[:6].lower()}@{num(round(alpha, 4))}"


def seconds(frame_count: int, rate: Fraction) -> str:
    """`frame_count` frames at `rate`, in seconds."""
    return num(Fraction(frame_count) / rate)


def rate_text(rate: Fraction) -> str:
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"


def quoted(expression: str) -> str:
    """An expression as one option value: quoted, so its commas do not end the filter."""
    return f"'{expression}'"


@dataclass
class Graph:
    """A filter graph being written: chains `[in]f1,f2[out]`, with fresh labels on demand."""

    chains: list[str] = field(default_factory=list)
    _count: int = 0

    def label(self, hint: str) -> str:
        self._count += 1
        return f"{hint}{self._count}"

    def chain(self, inputs: list[str], filters: list[str], hint: str = "s") -> str:
        """Add `inputs -> filters -> a new label`; return the label."""
        out = self.label(hint)
        self.add(inputs, filters, [out])
        return out

    def add(self, inputs: list[str], filters: list[str], outputs: list[str]) -> None:
        ins = "".join(f"[{name}]" for name in inputs)
        outs = "".join(f"[{name}]" for name in outputs)
        self.chains.append(f"{ins}{','.join(filters)}{outs}")

    def split(self, source: str, count: int, audio: bool = False) -> list[str]:
        """`count` copies of a stream (a stream feeds one filter only)."""
        if count == 1:
            return [source]
        outs = [self.label("a" if audio else "v") for _ in range(count)]
        self.add([source], [f"{'asplit' if audio else 'split'}={count}"], outs)
        return outs

    def text(self) -> str:
        return ";\n".join(self.chains)
