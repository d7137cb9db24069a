"""The probe's child process: `python -m vidstream.media.prober [--asset KIND] FILE` reads a
source (`probe.inspect`) or a composition's asset (`assets.inspect_asset`) and prints what it
found as one JSON line. A process of its own, so that a hostile file can crash or hang only it
(see `probe`)."""

from __future__ import annotations

import argparse
import json
import sys

from vidstream.core.errors import PermanentError
from vidstream.media.assets import inspect_asset
from vidstream.media.probe import inspect


def main(argv: list[str]) -> int:
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
    args = parser.parse_args(argv)
    try:
        if args.keyframes:
            from vidstream.media.scan import scan_keyframes

            info = scan_keyframes(args.path)
        elif args.asset:
            info = inspect_asset(args.path, args.asset, args.max_pixels)
        else:
            info = inspect(args.path, args.max_pixels, need_video=not args.sound_alone)
        print(json.dumps({"ok": True, "info": info}))
    except PermanentError as exc:
        print(json.dumps({"ok": False, "code": exc.code, "message": exc.message}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
