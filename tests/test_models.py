"""The Whisper model a deployment runs, as the gateway reads it: a language it cannot
transcribe is refused before anything is queued, naming the model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.test_gateway import expect_error, gw, upload
from vidstream.core.settings import Settings
from vidstream.media.models import BUNDLED, describe
from vidstream.runtime import Stack


def test_the_bundled_model_is_named_and_speaks_english_only() -> None:
    model = describe("")
    assert (model.name, model.multilingual) == (BUNDLED, False)
    assert Path(model.path, "model.bin").is_file()


def multilingual_folder(tmp_path: Path) -> Path:
    """A model folder whose vocabulary is a multilingual Whisper's (51,865 tokens): all the
    gateway reads of it."""
    folder = tmp_path / "whisper-small"
    folder.mkdir()
    (folder / "vocabulary.txt").write_text("".join(f"t{i}\n" for i in range(51_865)))
    return folder


@pytest.mark.parametrize(
    ("language", "asked"), [("de", "for 'de'"), ("auto", "to detect the language")]
)
async def test_a_language_the_model_cannot_transcribe_is_a_400_naming_it(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession,
    language: str, asked: str,
) -> None:  # fmt: skip
    """German, or detection, asked of the English-only bundled model: refused at once, where
    before the job ran and failed (or, for `auto`, wrote invented English captions)."""
    async with Stack(make_settings(), ("gateway",)) as api:
        key = await upload(http, api, b"\0" * 1000)
        body = {"source": {"key": key}, "language": language}
        async with http.post(f"{gw(api)}/v1/jobs", json=body) as r:
            message = await expect_error(r, 400, "unsupported_language")
        assert f"The model {BUNDLED} transcribes only English" in message and asked in message
        body = {"source": {"key": key}, "language": "en"}  # the refusal took nothing
        async with http.post(f"{gw(api)}/v1/jobs", json=body) as r:
            assert r.status == 202, await r.text()


async def test_a_multilingual_model_takes_any_language(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:  # fmt: skip
    settings = make_settings(whisper_model=str(multilingual_folder(tmp_path)))
    async with Stack(settings, ("gateway",)) as api:
        for language in ("de", "auto"):
            key = await upload(http, api, b"\0" * 1000)  # an upload serves one job
            body = {"source": {"key": key}, "language": language}
            async with http.post(f"{gw(api)}/v1/jobs", json=body) as r:
                assert r.status == 202, await r.text()
