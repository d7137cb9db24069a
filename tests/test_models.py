"""The Whisper models a deployment offers (`WHISPER_MODELS_DIR` beside the bundled tiny.en), as
the gateway lists them and a job chooses one: a language or task a model cannot do is refused
before anything is queued, naming the model; a job's chosen model is the one that transcribes it.

No package on PyPI ships a small multilingual CTranslate2 Whisper model (looked for in this
stop), so the multilingual paths here use a model folder the test assembles: a multilingual
vocabulary, which is all the gateway reads. Transcribing German was not run.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import get_args

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.conftest import cli, fetch, upload_job, watch
from tests.faults import children_running
from tests.media import Clip, words_of
from tests.test_gateway import expect_error, gw, upload
from tests.test_operations import eventually
from vidstream.cli.main import PRESETS
from vidstream.compose.caption_style import Preset
from vidstream.core.errors import ConfigError
from vidstream.core.settings import Settings
from vidstream.job.options import Options
from vidstream.media.ffmpeg import resolve_binary
from vidstream.media.models import BUNDLED, Task, bundled_path, catalogue, check, describe
from vidstream.media.whisper import WhisperConfig
from vidstream.media.whispers import Whispers
from vidstream.runtime import Stack

LANGUAGES = ("en", "zh", "de", "fr", "ja")


def test_the_bundled_model_is_named_and_speaks_english_only() -> None:
    model = describe("")
    assert (model.name, model.multilingual, model.languages) == (BUNDLED, False, ("en",))
    assert Path(model.path, "model.bin").is_file()


def multilingual_folder(root: Path, name: str = "whisper-small") -> Path:
    """A model folder with a multilingual Whisper's vocabulary (51,865 tokens, five language
    tokens among them): all the gateway reads of it."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "model.bin").write_bytes(b"")
    tokens = [f"<|{code}|>" for code in LANGUAGES] + ["<|translate|>", "<|0.00|>"]
    tokens += [f"t{i}" for i in range(51_865 - len(tokens))]
    (folder / "vocabulary.txt").write_text("\n".join(tokens) + "\n")
    return folder


def test_the_catalogue_lists_every_folder_beside_the_bundled_model(tmp_path: Path) -> None:
    multilingual_folder(tmp_path / "models")
    (tmp_path / "models" / "not-a-model").mkdir()  # no model.bin: not offered
    (tmp_path / "models" / "bundled-copy").symlink_to(bundled_path())
    found = catalogue("", str(tmp_path / "models"))
    assert found.default == BUNDLED
    assert list(found.models) == [BUNDLED, "bundled-copy", "whisper-small"]
    small = found.get("whisper-small")
    assert (small.multilingual, small.languages) == (True, LANGUAGES)
    assert found.get("bundled-copy").languages == ("en",)
    # The default by name, first in the list.
    by_name = catalogue("whisper-small", str(tmp_path / "models"))
    assert (by_name.default, next(iter(by_name.models))) == ("whisper-small", "whisper-small")
    # A default this process cannot read (the gateway may not have the workers' models):
    # offered, its languages unknown, so none is refused on a guess.
    unseen = catalogue("/srv/models/large-v3", str(tmp_path / "models"))
    assert unseen.default == "large-v3" and unseen.get("").languages == ()
    check(unseen.get(""), "ko", Task.TRANSLATE)
    # A name jobs cannot send, or one taken twice, stops the process at start.
    with pytest.raises(ConfigError, match="must be a name of its own"):
        catalogue(str(tmp_path / "elsewhere" / "whisper-small"), str(tmp_path / "models"))
    with pytest.raises(ConfigError, match="must be a name of its own"):
        catalogue("/srv/models/large v3", "")
    (tmp_path / "other" / "tiny.en").mkdir(parents=True)  # (the catalogue is read once)
    (tmp_path / "other" / "tiny.en" / "model.bin").write_bytes(b"")
    with pytest.raises(ConfigError, match="not one"):
        catalogue("", str(tmp_path / "other"))


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


async def test_models_are_listed_and_chosen_per_job(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:  # fmt: skip
    """`GET /v1/models` lists each model with its languages (no key needed, no path shown);
    a job names one in `model`, and gets a 400 naming the model for what it cannot do."""
    multilingual_folder(tmp_path / "models")
    settings = make_settings(whisper_models_dir=str(tmp_path / "models"))
    async with Stack(settings, ("gateway",)) as api:
        async with aiohttp.ClientSession() as anonymous, anonymous.get(f"{gw(api)}/v1/models") as r:
            assert r.status == 200, await r.text()
            listed = await r.json()
        assert listed == {
            "default": BUNDLED,
            "models": [
                {"name": BUNDLED, "multilingual": False, "languages": ["en"], "translate": False},
                {"name": "whisper-small", "multilingual": True, "languages": list(LANGUAGES),
                 "translate": True},
            ],
        }  # fmt: skip
        assert str(tmp_path) not in json.dumps(listed)

        async def post(**fields: object) -> aiohttp.ClientResponse:
            key = await upload(http, api, b"\0" * 1000)  # an upload serves one job
            return await http.post(f"{gw(api)}/v1/jobs", json={"source": {"key": key}, **fields})

        for fields in ({"language": "de"}, {"language": "auto"}, {"task": "translate"}):
            async with await post(model="whisper-small", **fields) as r:
                assert r.status == 202, await r.text()
                assert (await r.json())["options"]["model"] == "whisper-small"
        async with await post(model="whisper-small", language="ko") as r:
            message = await expect_error(r, 400, "unsupported_language")
        assert "whisper-small does not know the language 'ko'" in message
        async with await post(task="translate") as r:
            message = await expect_error(r, 400, "unsupported_task")
        assert f"The model {BUNDLED} transcribes only English and cannot translate" in message
        async with await post(model="large-v9") as r:
            message = await expect_error(r, 400, "unknown_model")
        assert "There is no model 'large-v9'; choose one of tiny.en, whisper-small" in message
        async with await post(model="../etc") as r:
            await expect_error(r, 400, "invalid_request")


@pytest.mark.slow  # Whisper loads
async def test_a_job_is_transcribed_by_the_model_it_chose(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession,
    tmp_path: Path, clip: Clip,
) -> None:  # fmt: skip
    """The worker starts a pool for the chosen model when a job first asks for it: the
    transcript names that model, and a job that names none still gets the default."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "english-copy").symlink_to(bundled_path())
    settings = make_settings(whisper_models_dir=str(tmp_path / "models"))
    async with Stack(settings) as stack:
        assert stack.gateway is not None
        for model in ("english-copy", ""):
            fields = {"model": model} if model else {}
            job = await upload_job(http, stack.gateway.url, clip.path, kind="transcribe",
                                   **fields)  # fmt: skip
            assert (await watch(job))[-1]["event"] == "completed"
            async with http.get(job["links"]["self"]) as r:
                outputs = (await r.json())["outputs"]
            transcript = json.loads(await fetch(http, outputs["transcript"]["url"]))
            assert transcript["model"] == (model or BUNDLED)
            heard = words_of(transcript["text"])
            assert sum(w in heard for w in clip.words) / len(clip.words) >= 0.75


async def test_the_cli_chooses_a_model_and_refuses_before_uploading(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession,
    tmp_path: Path, clip: Clip,
) -> None:  # fmt: skip
    """`vidstream submit --language de` against an English-only model ends before the video is
    sent (no upload link asked for); `--model`, `--translate` and the layout options reach the
    job as its options."""
    multilingual_folder(tmp_path / "models")
    settings = make_settings(whisper_models_dir=str(tmp_path / "models"))
    async with Stack(settings, ("gateway",)) as api:
        env = {**os.environ, "REDIS_URL": settings.redis_url}
        uploads = await upload_links(api)
        code, said = await cli(env, "submit", str(clip.path), "--gateway", gw(api),
                               "--language", "de")  # fmt: skip
        assert code == 1 and f"the model {BUNDLED} does not transcribe 'de'" in said, said
        assert await upload_links(api) == uploads  # nothing was sent
        asked = ["--model", "whisper-small", "--language", "de", "--translate", "--max-chars",
                 "20", "--max-lines", "1", "--position", "top", "--style", "boxed",
                 "--karaoke", "--speaker-labels"]  # fmt: skip
        code, said = await cli(env, "submit", str(clip.path), "--gateway", gw(api), *asked)
        assert code == 0, said
        assert await upload_links(api) == uploads + 1  # the count does count
        options = json.loads(said)["options"]
        assert {k: options[k] for k in ("model", "language", "task", "max_chars_per_line",
                                        "max_lines", "position", "style", "karaoke",
                                        "speaker_labels")} == {
            "model": "whisper-small", "language": "de", "task": "translate",
            "max_chars_per_line": 20, "max_lines": 1, "position": "top", "style": "boxed",
            "karaoke": True, "speaker_labels": True,
        }  # fmt: skip


async def upload_links(api: Stack) -> int:
    """Upload links the gateway has handed out (POST /v1/uploads), by its metrics."""
    async with aiohttp.ClientSession() as http, http.get(f"{gw(api)}/metrics") as r:
        text = await r.text()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("vidstream_http_requests_total") and '"/v1/uploads"' in line
    )


def test_the_cli_offers_every_caption_preset() -> None:
    assert get_args(Preset) == PRESETS


def test_translated_captions_are_tagged_english() -> None:
    """A translated job's subtitle track is English, whatever was spoken."""
    assert Options(language="de", task="translate").written_in == "en"
    assert Options(language="de").written_in == "de"
    assert Options(language=None).written_in is None


def whisper_servers() -> list[int]:
    return children_running(b"whisper_server")


@pytest.mark.slow  # Whisper servers start
async def test_a_models_load_outlives_a_cancelled_job_but_not_the_worker() -> None:
    """A job cancelled while the model it chose loads: the load goes on and the next job gets
    that pool. Pools closed while one loads (the worker stopping): no Whisper server is left."""
    models = catalogue("", "")
    config = WhisperConfig(ffmpeg=resolve_binary("auto"))
    whispers, other = Whispers(config, models, size=1), Whispers(config, models, size=1)

    async def servers(count: int) -> bool:
        return len(whisper_servers()) == count

    try:
        job = asyncio.create_task(whispers.pool(""))
        await eventually(lambda: servers(1))
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        pool = await whispers.pool("")  # the same load, finished
        assert pool.pids() == whisper_servers()
        loading = asyncio.create_task(other.pool(""))
        await eventually(lambda: servers(2))
        await other.close()  # while it loads
        with pytest.raises(asyncio.CancelledError):
            await loading
        assert whisper_servers() == pool.pids()
    finally:
        await asyncio.gather(whispers.close(), other.close())
    assert whisper_servers() == []
