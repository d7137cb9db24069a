"""The Lua scripts: every one a file of its own, shipped with the package, that Redis compiles."""

from __future__ import annotations

import re
from pathlib import Path

from redis.asyncio import Redis

from vidstream.state import scripts

PACKAGE = Path(scripts.__file__).parent.parent


async def test_every_script_compiles_in_redis(redis: Redis) -> None:
    """Each script, its includes in place, loads into Redis (a typo fails here, not when a
    rarely taken path first runs it in production)."""
    names = scripts.names()
    assert "job_transition" in names and "_now_ms" in names
    for name in names:
        text = scripts.source(name)
        assert "--#include" not in text, name
        assert await redis.script_load(text), name


def test_no_lua_is_left_in_python() -> None:
    """Every script vidstream runs comes from a `.lua` file: no module holds Lua source."""
    holding = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "redis.call(" in path.read_text(encoding="utf-8")
    ]
    assert holding == []


def test_redis_time_is_read_in_one_place() -> None:
    """The clock every script shares (`now_ms`, Redis's TIME in ms) is written once."""
    reading = [
        name for name in scripts.names()
        if "redis.call('TIME')" in (PACKAGE / "state" / "lua" / f"{name}.lua").read_text()
    ]  # fmt: skip
    assert reading == ["_now_ms"]


def test_each_script_states_its_contract() -> None:
    """A script's file begins with what KEYS and ARGV hold and what it returns (an included
    piece, with where it is included and what it sets)."""
    for name in scripts.names():
        head = []
        for line in (PACKAGE / "state" / "lua" / f"{name}.lua").read_text().splitlines():
            if not line.startswith("--"):
                break
            head.append(line)
        text = "\n".join(head)
        if name.startswith("_"):
            assert "Included" in text and re.search(r"\bSets\b", text), name
        else:
            assert "KEYS:" in text and "Returns" in text, name
