"""Text from anywhere (an uploaded SRT, WebVTT or transcript, a timeline's text clip) as the
lines a person would see. Pure.

Decoding (`&#10;`, a JSON `\\u2028`) can turn characters that look harmless into line breaks, so
every writer of a line-based file (ASS for libass, one text file per `drawtext` line) takes its
text through `lines` after the last decoding step, and writes each line where it belongs.
"""

from __future__ import annotations

import re

# Every character some reader ends a line at: \r and \n (libass, FFmpeg), the rest Python's
# str.splitlines and Unicode (NEL, line and paragraph separators).
BREAK = re.compile("\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
# C0 and C1 controls (a NUL ends libass's reading of a file) and lone surrogates (which no UTF-8
# file can hold); a tab is a space.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")


def lines(text: str) -> list[str]:
    """`text` split at every kind of line break, each line without control characters."""
    return [_CONTROL.sub("", part.replace("\t", " ")) for part in BREAK.split(text)]


def is_plain(line: str) -> bool:
    """Whether `line` is one line of plain text: no line break, no control character."""
    return not (BREAK.search(line) or _CONTROL.search(line) or "\t" in line)
