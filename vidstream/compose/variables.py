"""Placeholders: `{{name}}` in a text clip's text or in any storage key of a timeline, filled
from a job's `variables`. Pure, on the timeline's JSON before it is validated, so a template is
checked once filled exactly as a timeline written out by hand."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from vidstream.compose.rules import InvalidTimeline, Problem

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*\}\}")
FILLED = ("text", "key")  # the fields whose strings may hold placeholders
MAX_VARIABLES = 100
MAX_VALUE = 2000  # characters


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(path, string) of every fillable string under `value`."""
    if isinstance(value, dict):
        for name, item in value.items():
            where = f"{path}.{name}"
            if name in FILLED and isinstance(item, str):
                yield where, item
            else:
                yield from _strings(item, where)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}[{i}]")


def placeholders(raw: Any) -> list[str]:
    """The names a timeline's placeholders use, in order of first use."""
    found: dict[str, None] = {}
    for _, text in _strings(raw, "timeline"):
        for match in PLACEHOLDER.finditer(text):
            found.setdefault(match.group(1))
    return list(found)


def check(variables: object) -> dict[str, str]:
    """A job's `variables` as names to strings (numbers are written out); `InvalidTimeline`
    naming what is wrong."""
    if variables is None:
        return {}
    if not isinstance(variables, dict):
        raise InvalidTimeline([Problem("variables", "object", "variables must be an object")])
    problems, values = [], {}
    if len(variables) > MAX_VARIABLES:
        problems.append(Problem("variables", "too_many", f"at most {MAX_VARIABLES} variables"))
    for name, value in variables.items():
        path = f"variables.{name}"[:80]
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            problems.append(Problem(path, "string", "a variable is a string or a number"))
        elif len(str(value)) > MAX_VALUE:
            problems.append(Problem(path, "too_long", f"at most {MAX_VALUE} characters"))
        else:
            values[str(name)] = str(value)
    if problems:
        raise InvalidTimeline(problems)
    return values


def fill(raw: Any, variables: Mapping[str, str]) -> Any:
    """`raw` with every placeholder replaced; `InvalidTimeline` naming each placeholder that
    has no variable (and where it is used)."""
    filled, missing = fill_known(raw, variables)
    if missing:
        raise InvalidTimeline(missing)
    return filled


def fill_known(raw: Any, variables: Mapping[str, str]) -> tuple[Any, list[Problem]]:
    """`raw` with each placeholder that has a variable replaced (the others left as they are),
    and a problem for each that has none: so they can be reported with the timeline's own."""
    missing: dict[str, str] = {}
    for path, text in _strings(raw, "timeline"):
        for match in PLACEHOLDER.finditer(text):
            if match.group(1) not in variables:
                missing.setdefault(match.group(1), path)
    problems = [
        Problem(f"variables.{name}", "missing_variable", f"{path} uses {{{{{name}}}}}")
        for name, path in missing.items()
    ]
    return _filled(raw, variables), problems


def _filled(value: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            name: PLACEHOLDER.sub(lambda m: variables.get(m.group(1), m.group(0)), item)
            if name in FILLED and isinstance(item, str) else _filled(item, variables)
            for name, item in value.items()
        }  # fmt: skip
    if isinstance(value, list):
        return [_filled(item, variables) for item in value]
    return value
