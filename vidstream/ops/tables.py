"""Tables and JSON for the command line's answers: drawn by rich on a terminal, aligned plain
text otherwise. Light to import: `vidstream jobs` prints with it and nothing else of `ops`."""

from __future__ import annotations

import json
from typing import Any, TextIO


def table(out: TextIO, title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A table: drawn by rich on a terminal, aligned plain text otherwise."""
    if out.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        Console(file=out).print(table)
        return
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    for line in [columns, *rows]:
        out.write("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() + "\n")


def dump(out: TextIO, value: object) -> int:
    out.write(json.dumps(value, indent=2) + "\n")
    return 0


def print_jobs(jobs: list[dict[str, Any]], out: TextIO, as_json: bool = False) -> int:
    """`vidstream jobs`: the caller's recent jobs."""
    if as_json:
        return dump(out, {"jobs": jobs})
    if not jobs:
        out.write("no jobs\n")
        return 0
    rows = [
        [j["id"], j["kind"], j["status"], f"{round(100 * j['progress'])}%", j["created_at"],
         (j.get("source") or {}).get("name") or "-"]
        for j in jobs
    ]  # fmt: skip
    table(out, "jobs", ["job", "kind", "status", "progress", "created", "source"], rows)
    return 0
