"""Request bodies, pure: the JSON depth bound sees brackets in strings for what they are, costs
little on a large body, and cannot be walked around in another encoding."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vidstream.http.bodies import MAX_DEPTH, _depth_ok, parse_json
from vidstream.http.errors import ApiError


def nested(depth: int) -> str:
    """A JSON object `depth` levels deep, alternating arrays and objects."""
    inner = "1"
    for level in range(depth - 1):
        inner = f"[{inner}]" if level % 2 else f'{{"k": {inner}}}'
    return f'{{"a": {inner}}}'


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    return 0


def refused(raw: bytes) -> str:
    with pytest.raises(ApiError) as err:
        parse_json(raw)
    assert (err.value.status, err.value.code) == (400, "invalid_json")
    return err.value.message


def test_the_depth_limit_is_exact() -> None:
    """JSON nested 16 levels deep is read; 17 levels is refused, saying so."""
    assert parse_json(nested(MAX_DEPTH).encode())["a"]
    assert "16 levels" in refused(nested(MAX_DEPTH + 1).encode())


@pytest.mark.parametrize(
    "text",
    [
        '{"a": "' + "[{" * 5000 + '"}',  # brackets inside a string are text
        '{"a": "\\"' + "[" * 5000 + '"}',  # ... after an escaped quote too
        '{"a": "\\\\\\"' + "{" * 5000 + '", "b": []}',  # an escaped backslash, then quote
        '{"' + "[" * 100 + '": "' + "]" * 100 + '", "b": [[[]]]}',  # in keys
        '{"a": ["[", "]", "]]]]"], "b": ' + "[" * 15 + "]" * 15 + "}",
    ],
)
def test_brackets_inside_strings_do_not_count(text: str) -> None:
    """Brackets and escaped quotes inside strings are not nesting: such a body is read."""
    assert parse_json(text.encode()) == json.loads(text)


@pytest.mark.parametrize(
    "text",
    [
        '{"a": "\\\\", "b": ' + "[" * 17 + "]" * 17 + "}",  # the string ends at the quote
        '{"a": "]]]]]]]]]]]]]]]]]]", "b": ' + "[" * 17 + "]" * 17 + "}",
        '{"a": ' + "[" * 5000,  # cut short, unclosed
    ],
)
def test_nesting_outside_strings_counts(text: str) -> None:
    """Brackets outside strings count, whatever the strings before them hold."""
    assert "16 levels" in refused(text.encode())


@settings(max_examples=120, deadline=None)
@given(
    st.recursive(
        st.none() | st.integers() | st.text(alphabet='[]{}"\\ab\u00e9'),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(alphabet='[]{}"\\a', max_size=4), children, max_size=3)
        ),
        max_leaves=40,
    )
)
def test_the_scan_agrees_with_the_parser(value: Any) -> None:
    """For any JSON value, the scan says "too deep" exactly when the parsed value is."""
    raw = json.dumps({"v": value}, ensure_ascii=False).encode()
    assert _depth_ok(raw, 4) == (depth_of({"v": value}) <= 4)


def test_another_encoding_cannot_hide_the_nesting() -> None:
    """UTF-16, whose bytes the scan cannot read, is refused, not parsed 3000 levels deep."""
    text = '{"a": "\u2200", "b": ' + "[" * 3000 + "]" * 3000 + "}"
    for encoding in ("utf-16-le", "utf-16", "utf-32"):
        refused(text.encode(encoding))
    assert parse_json(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}  # a UTF-8 BOM is still fine


def test_the_scan_is_cheap_on_a_large_body() -> None:
    """1 MiB of brackets is scanned in a few milliseconds, not a Python loop over each byte."""
    bodies = [
        b'{"a": [' + b"1," * (512 * 1024) + b"1]}",
        b'{"a": [' + b"[]," * (350 * 1024) + b"[]]}",
        b'{"a": [' + b'{"k": ["[", 1]},' * (70 * 1024) + b"{}]}",
    ]
    for raw in bodies:
        started = time.process_time()  # CPU time: what a busy machine does not inflate
        assert _depth_ok(raw, MAX_DEPTH)
        took = time.process_time() - started
        assert took < 0.075, f"{len(raw)} bytes took {took * 1000:.0f} ms"
