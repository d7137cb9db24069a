"""How a setting is declared, read, checked and documented: the machinery behind `Settings`.

A field declared with `setting()` carries a `Spec`. From the declarations follow parsing an
environment variable (`parse`), checking a value however it was built (`checked`), and the
README's table and deploy/.env.example (`table`, `env_file`).
"""

from __future__ import annotations

import dataclasses
import math
import shlex
import textwrap
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from vidstream.core.errors import ConfigError

T = TypeVar("T")
MiB = 1024 * 1024
GiB = 1024 * MiB
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
CSV = tuple[str, ...]
KINDS: tuple[Any, ...] = (str, int, float, bool, Path, CSV)
Declaration = tuple[dataclasses.Field[Any], Any, "Spec"]


@dataclass(frozen=True, slots=True)
class Spec:
    """How one setting is read, checked and documented."""

    env: str
    help: str
    low: float = -math.inf
    high: float = math.inf
    choices: tuple[str, ...] = ()
    url: tuple[str, ...] = ()  # accepted schemes
    shown_default: str | None = None  # markdown, for defaults derived from other settings


def setting(
    env: str,
    default: T,
    help: str,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    choices: tuple[str, ...] = (),
    url: tuple[str, ...] = (),
    secret: bool = False,
    shown_default: str | None = None,
) -> T:
    """Declare a `Settings` field read from `env`; a `secret` one stays out of repr (and logs)."""
    spec = Spec(env, help, low, high, choices, url, shown_default)
    return dataclasses.field(default=default, repr=not secret, metadata={"setting": spec})


def declarations(cls: type) -> tuple[Declaration, ...]:
    """Each field of the settings class `cls` with its type and `Spec`."""
    hints = typing.get_type_hints(cls)  # annotations are strings (PEP 563): resolve once
    for f in dataclasses.fields(cls):
        if not isinstance(f.metadata.get("setting"), Spec) or hints[f.name] not in KINDS:
            raise TypeError(
                f"{cls.__name__}.{f.name}: declare it with setting(), as one of {KINDS}"
            )
    return tuple((f, hints[f.name], f.metadata["setting"]) for f in dataclasses.fields(cls))


def parse(spec: Spec, kind: Any, raw: str) -> Any:
    """The typed value of a non-blank variable; `__post_init__` checks its range."""
    if kind == CSV:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if kind is bool and raw.lower() in TRUE + FALSE:
        return raw.lower() in TRUE
    if kind is bool:
        raise ConfigError(f"{spec.env} must be one of {', '.join(TRUE + FALSE)}; got {raw!r}")
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{spec.env} must be a {kind.__name__}, got {raw!r}") from None


def checked(spec: Spec, kind: Any, default: Any, value: Any) -> Any:
    """`value`, normalised, or a `ConfigError` naming the variable and the value."""
    if kind is float and type(value) is int:
        value = float(value)
    if kind == CSV:
        ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ConfigError(f"{spec.env} must be a {kind.__name__}, got {value!r}")
    if kind in (int, float):
        if not math.isfinite(value):
            raise ConfigError(f"{spec.env} must be a finite number, got {value!r}")
        if not spec.low <= value <= spec.high:
            raise ConfigError(f"{spec.env} must be {_range(spec)}, got {value!r}")
    if kind is not str or value == default == "":  # "" means unset, or derived from others
        return value
    if spec.choices and value.lower() not in spec.choices:
        raise ConfigError(f"{spec.env} must be one of {', '.join(spec.choices)}; got {value!r}")
    if spec.url:
        try:
            parts = urlsplit(value)
        except ValueError:  # an unclosed [ in an IPv6 host
            parts = urlsplit("")
        # A Unix socket URL names a path, not a host.
        if parts.scheme not in spec.url or not (parts.netloc or parts.scheme == "unix"):
            raise ConfigError(f"{spec.env} must be a {' or '.join(spec.url)} URL, got {value!r}")
    return value.lower() if spec.choices else value


def _range(spec: Spec) -> str:
    low, high = _human(spec.low), _human(spec.high)
    if math.isfinite(spec.low) and math.isfinite(spec.high):
        return f"between {low} and {high}"
    return f"at least {low}" if math.isfinite(spec.low) else f"at most {high}"


def _human(value: Any) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB)):
        if isinstance(value, int) and value >= size and value % size == 0:
            return f"{value // size} {unit}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _shown(default: Any, spec: Spec) -> str:
    if spec.shown_default is not None:
        return spec.shown_default
    if default in ("", ()):
        return "-"
    if isinstance(default, bool | tuple):
        return f"`{str(default).lower() if isinstance(default, bool) else ','.join(default)}`"
    return _human(default) if isinstance(default, int | float) else f"`{default}`"


def _meaning(spec: Spec) -> str:
    """The help of a setting with what it accepts (markdown)."""
    meaning = spec.help
    if spec.choices:
        meaning += "; one of " + ", ".join(f"`{choice}`" for choice in spec.choices)
    elif spec.url:
        meaning += "; a URL: " + ", ".join(f"`{scheme}://`" for scheme in spec.url)
    elif math.isfinite(spec.low) or math.isfinite(spec.high):
        meaning += f"; {_range(spec)}"
    return meaning


def table(fields: tuple[Declaration, ...]) -> str:
    """The README's configuration table (markdown), one row per declared setting."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for f, _kind, spec in fields:
        rows.append(f"| `{spec.env}` | {_shown(f.default, spec)} | {_meaning(spec)} |")
    return "\n".join(rows)


def env_file(fields: tuple[Declaration, ...]) -> str:
    """Every declared setting as an env file (deploy/.env.example): its help as comments, then
    `NAME=default`. Secrets and defaults derived from other settings are left empty, which
    vidstream reads as unset; a comment says what empty means."""
    blocks = []
    for f, _kind, spec in fields:
        notes = [_meaning(spec).replace("`", "")]
        secret = not f.repr
        if secret:
            notes.append("secret: keep the file private")
        if f.default in ("", ()) and spec.shown_default is not None:  # derived from others
            notes.append("default: " + spec.shown_default.replace("`", ""))
        lines = [line for note in notes for line in textwrap.wrap(note, 98)]
        value = "" if secret else _env_value(f.default)
        blocks.append("\n".join([*(f"# {line}" for line in lines), f"{spec.env}={value}"]))
    return "\n\n".join(blocks)


def _env_value(default: Any) -> str:
    """`default` as `from_env` reads it back, quoted when a shell or systemd would split it."""
    if isinstance(default, bool):
        text = "true" if default else "false"
    elif isinstance(default, float):
        text = str(int(default)) if default.is_integer() else repr(default)
    elif isinstance(default, tuple):
        text = ",".join(default)
    else:
        text = str(default)
    return shlex.quote(text) if text else ""
