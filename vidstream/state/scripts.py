"""The Lua scripts vidstream runs in Redis, read once from the `.lua` files in `lua/` beside this
module (shipped as package data).

Each file begins with its contract: what KEYS and ARGV hold and what it returns. Redis runs a
script as one chunk, with no `require`, so a line `--#include NAME.lua` stands for the text of that
file: the pieces several scripts share (Redis's clock, the creation of a job) are written once,
in files whose names begin with `_`. `register` gives a component its scripts: redis-py sends a
script's SHA1 (EVALSHA) and loads its text only when Redis does not have it yet.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from importlib.resources.abc import Traversable

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

_INCLUDE = re.compile(r"^--#include (\S+)\.lua$", re.MULTILINE)


def _folder() -> Traversable:
    return resources.files(__package__).joinpath("lua")


@functools.cache
def source(name: str) -> str:
    """The text of `lua/NAME.lua` with its includes in place; read from disk once."""
    text = _folder().joinpath(f"{name}.lua").read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda found: source(found[1]), text)


def register(redis: Redis, name: str) -> AsyncScript:
    """Script `name` (`lua/NAME.lua`), callable on `redis` as `await script(keys=..., args=...)`."""
    return redis.register_script(source(name))


def names() -> list[str]:
    """Every script, pieces included, by name (sorted)."""
    found = (f.name for f in _folder().iterdir() if f.name.endswith(".lua"))
    return sorted(name.removesuffix(".lua") for name in found)
