"""The probe's child process: `python -m vidstream.media.prober [--asset KIND] FILE` reads a
source (`probe.inspect`) or a composition's asset (`assets.inspect_asset`) and prints what it
found as one JSON line. A process of its own, so that a hostile file can crash or hang only it
(see `probe`).

`python -m vidstream.media.prober --serve` does the same for each line of arguments (a JSON list)
it reads, answering each with its line: a worker keeps a few of these (`probers`) instead of
starting Python, PyAV and FFmpeg's libraries again for every file.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from vidstream.core.errors import PermanentError
from vidstream.media.assets import inspect_asset
from vidstream.media.probe import inspect


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Probe a file; print what was found as JSON.")
    parser.add_argument("path")
    parser.add_argument("--max-pixels", type=int, default=None)
    parser.add_argument(
        "--sound-alone", action="store_true", help="a source of sound alone will do"
    )
    parser.add_argument(
        "--asset", choices=("video", "image", "audio"), help="probe a composition's asset"
    )
    parser.add_argument(
        "--keyframes", action="store_true", help="list the picture's keyframes (`scan`)"
    )
    return parser


def answer(argv: list[str]) -> dict[str, Any]:
    """What probing the file `argv` names found: {"ok": true, "info"} or its refusal."""
    args = _parser().parse_args(argv)
    try:
        if args.keyframes:
            from vidstream.media.scan import scan_keyframes

            info = scan_keyframes(args.path)
        elif args.asset:
            info = inspect_asset(args.path, args.asset, args.max_pixels)
        else:
            info = inspect(args.path, args.max_pixels, need_video=not args.sound_alone)
        return {"ok": True, "info": info}
    except PermanentError as exc:
        return {"ok": False, "code": exc.code, "message": exc.message}


def serve() -> int:
    """Answer each line of arguments on stdin with a line on stdout, until stdin ends. Arguments
    that are no list of strings end the process: its parent sends none."""
    for line in sys.stdin:
        argv = json.loads(line)
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            return 2
        print(json.dumps(answer(argv)), flush=True)
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--serve"]:
        return serve()
    print(json.dumps(answer(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
