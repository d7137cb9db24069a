"""The kinds of job, each declared once (`job.kinds`) and read by everyone: each kind's code
runs every stage of its pipeline, the gateway checks a request with its kind's model, lists the
kinds and documents each request, `vidstream submit` offers what the gateway makes from a video,
and no other module names a kind."""

from __future__ import annotations

import importlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.conftest import cli
from tests.test_gateway import gw
from vidstream import kinds
from vidstream.core.settings import Settings
from vidstream.http.bodies import validated
from vidstream.http.errors import ApiError
from vidstream.job.kinds import DEFAULT, KINDS, ComposeOptions, FromVideo, Kind
from vidstream.job.pipelines import pipeline
from vidstream.job.stages import Stage
from vidstream.runtime import Stack

ROOT = Path(__file__).resolve().parent.parent / "vidstream"


@pytest.fixture
async def gateway(make_settings: Callable[..., Settings], redis: Redis) -> AsyncIterator[Stack]:
    async with Stack(make_settings(), ("gateway",)) as stack:
        yield stack


@pytest.mark.parametrize("kind", list(Kind))
def test_each_kind_has_code_for_every_stage_it_runs(kind: Kind) -> None:
    """A kind's handler module runs each stage its pipeline can hand it (a compose job that
    transcribes a clip runs two), and nothing else."""
    spec = KINDS[kind]
    handler = kinds.handler(kind)
    runs = set(pipeline(kind).stages)
    if spec.options is ComposeOptions:
        runs |= set(pipeline(kind, ComposeOptions(transcribe="voice")).stages)
    assert set(handler.stages) == runs
    assert all(kinds.stage_work(kind, stage) is handler.stages[stage] for stage in runs)


def test_a_stage_a_kind_does_not_run_is_refused_by_name() -> None:
    """A worker handed a stage a kind has no work for says so, rather than guess."""
    with pytest.raises(LookupError, match="transcribe kind declares no work for its render"):
        kinds.stage_work(Kind.TRANSCRIBE, Stage.RENDER)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"source": {"key": "k"}, "colour": 1, "shade": 2}, "for a subtitle job: 'colour', 'sh"),
        ({}, "source is required"),
        ({"source": "uploads/x"}, 'source must be {"key": "<storage key>"}'),
        ({"source": {"key": "k"}, "language": "english"}, "ISO 639-1"),
        ({"source": {"key": "k"}, "priority": "urgent"}, "priority must be one of high"),
        ({"source": {"key": "k"}, "formats": ["pdf"]}, "unknown format(s) pdf"),
    ],
)
def test_a_request_is_checked_by_its_kinds_model(body: dict[str, object], message: str) -> None:
    """What is wrong with a request is said as the option's own check says it."""
    with pytest.raises(ApiError) as refused:
        validated(FromVideo, body, "a subtitle job")
    assert (refused.value.status, refused.value.code) == (400, "invalid_request")
    assert message in refused.value.message


async def test_the_gateway_lists_and_documents_every_kind(
    gateway: Stack, http: aiohttp.ClientSession
) -> None:
    """GET /v1/kinds (no key needed) names every kind and its stages; the OpenAPI document
    accepts each kind's request, and a form for those made from a video."""
    async with http.get(f"{gw(gateway)}/v1/kinds") as r:
        assert r.status == 200
        listed = {k["name"]: k for k in (await r.json())["kinds"]}
    assert list(listed) == [kind.value for kind in KINDS]
    assert [name for name, k in listed.items() if k["default"]] == [DEFAULT.value]
    assert listed["subtitle"]["stages"] == ["transcribe", "render"]
    assert listed["compose"]["from_video"] is False
    async with http.get(f"{gw(gateway)}/v1/openapi.json") as r:
        document = await r.json()
    schemas = document["components"]["schemas"]
    body = document["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    refs = [
        option["$ref"].rpartition("/")[2] for option in body["application/json"]["schema"]["anyOf"]
    ]
    assert refs == [k["schema"] for k in listed.values()]
    for kind in KINDS:
        schema = schemas[listed[kind.value]["schema"]]
        assert schema["properties"]["kind"]["const"] == kind.value
        assert ("kind" in schema["required"]) is (kind is not DEFAULT)
        assert schema["additionalProperties"] is False
    form_kinds = schemas["JobForm"]["properties"]["kind"]["enum"]
    assert form_kinds == [name for name, k in listed.items() if k["from_video"]]
    assert schemas["Job"]["properties"]["kind"]["enum"] == list(listed)


async def test_submit_refuses_a_kind_the_gateway_does_not_make_from_a_video(
    gateway: Stack, role_env: dict[str, str], tmp_path: Path
) -> None:
    """`vidstream submit --kind compose` stops before uploading, naming the kinds it can."""
    video = tmp_path / "a.mp4"
    video.write_bytes(b"not uploaded")
    code, out = await cli(role_env, "submit", str(video), "--kind", "compose",
                          "--gateway", gw(gateway))  # fmt: skip
    assert code == 1 and "--kind must be one of subtitle, transcribe" in out, out
    assert gateway.services is not None
    assert await gateway.services.jobs.recent("default", 10) == []


def test_no_module_but_the_registry_names_a_kind() -> None:
    """Adding a kind touches its registry entry and its handler module only: no other module
    branches on a kind or spells one. (A handler module may name its own kind's classes.)"""
    # A kind spelled out (those named like a stage, "transcribe" and "render", only where a
    # kind is compared with it), or a member of the enum.
    spelled = "|".join(kind.value for kind in KINDS if kind.value not in {s.value for s in Stage})
    named = re.compile(
        rf"\bKind\.[A-Z_]+\b|[\"'](?:{spelled})[\"']|\.kind(?:\.value)? *[!=]= *[\"']"
    )
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        where = path.relative_to(ROOT).as_posix()
        if where == "job/kinds.py":
            continue
        found += [f"{where}: {line.strip()}" for line in path.read_text().splitlines()
                  if named.search(line)]  # fmt: skip
    assert found == []


def test_every_handler_is_a_module_of_the_kinds_package() -> None:
    """Handlers are named by string (import-linter cannot see them): each is a module of
    `vidstream.kinds`, where the layers allow it, and it imports."""
    for kind, spec in KINDS.items():
        assert spec.handler.startswith("vidstream.kinds."), (kind, spec.handler)
        importlib.import_module(spec.handler)
