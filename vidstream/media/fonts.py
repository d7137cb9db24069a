"""The font families vidstream draws with, and exactly which files they are.

Two free families from Debian packages: DejaVu (`fonts-dejavu-core`, wide Unicode coverage) and
Liberation (`fonts-liberation2`, metric-compatible with Arial, Times and Courier). Each family is
declared as the very files its package installs, so a timeline draws with the same glyphs on
every machine, whatever else is installed: `fonts-liberation` 1.x (which `chromium` pulls in)
ships files of the same names with other metrics, and fontconfig may prefer yet another font.

A render links the files it uses into its working directory (`DIR`): `drawtext` names them
there, so no machine path is in a graph, and libass gets that directory as `fontsdir`, whose
fonts it prefers to the system's for the same family name.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Literal, get_args

from vidstream.core.errors import ConfigError

Family = Literal[
    "DejaVu Sans", "DejaVu Serif", "DejaVu Sans Mono",
    "Liberation Sans", "Liberation Serif", "Liberation Mono",
]  # fmt: skip
FAMILIES: tuple[str, ...] = get_args(Family)
ROOT = Path("/usr/share/fonts")  # where Debian's font packages install
DIR = "fonts"  # in a render's working directory: the declared files it uses, linked

_DEJAVU, _LIBERATION = "fonts-dejavu-core", "fonts-liberation2"
# family -> (package, regular file, bold file), the files under ROOT
_DECLARED = {
    "DejaVu Sans": (_DEJAVU, "truetype/dejavu/DejaVuSans.ttf",
                    "truetype/dejavu/DejaVuSans-Bold.ttf"),
    "DejaVu Serif": (_DEJAVU, "truetype/dejavu/DejaVuSerif.ttf",
                     "truetype/dejavu/DejaVuSerif-Bold.ttf"),
    "DejaVu Sans Mono": (_DEJAVU, "truetype/dejavu/DejaVuSansMono.ttf",
                         "truetype/dejavu/DejaVuSansMono-Bold.ttf"),
    "Liberation Sans": (_LIBERATION, "truetype/liberation2/LiberationSans-Regular.ttf",
                        "truetype/liberation2/LiberationSans-Bold.ttf"),
    "Liberation Serif": (_LIBERATION, "truetype/liberation2/LiberationSerif-Regular.ttf",
                         "truetype/liberation2/LiberationSerif-Bold.ttf"),
    "Liberation Mono": (_LIBERATION, "truetype/liberation2/LiberationMono-Regular.ttf",
                        "truetype/liberation2/LiberationMono-Bold.ttf"),
}  # fmt: skip


def declared(family: str, bold: bool = False) -> PurePosixPath:
    """The file of `family` (bold or regular), relative to `ROOT`."""
    return PurePosixPath(_DECLARED[family][2 if bold else 1])


def in_workdir(family: str, bold: bool = False) -> str:
    """Where a render's graph finds the file: relative to its working directory (see `link`)."""
    return f"{DIR}/{declared(family, bold).name}"


def font_file(family: str, bold: bool = False, root: Path | None = None) -> Path:
    """The declared file of `family` under `root` (default `ROOT`); `ConfigError` when its
    package is missing."""
    return _found(family, bold, root or ROOT)


@functools.cache
def _found(family: str, bold: bool, root: Path) -> Path:
    path = root / declared(family, bold)
    if not path.is_file():
        raise ConfigError(
            f"the font file {path} ({family}) is missing: install {_DECLARED[family][0]}"
        )
    return path


def link(workdir: Path, faces: Iterable[tuple[str, bool]], root: Path | None = None) -> Path:
    """Link the declared file of each (family, bold) into `workdir`/`DIR`; that directory."""
    folder = workdir / DIR
    folder.mkdir(parents=True, exist_ok=True)
    for family, bold in dict.fromkeys(faces):
        target = folder / declared(family, bold).name
        if not target.exists():
            target.symlink_to(font_file(family, bold, root))
    return folder
