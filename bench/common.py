"""What the benchmarks that run vidstream's roles as processes share: the spoken test video,
the CPU of process trees and of the machine, free ports, the bench's Redis keys, and the
machine's description in a report."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import socket
import subprocess
import time
import wave
from datetime import datetime
from pathlib import Path

from tests.media import FFMPEG, GAP_S, RATE, speech_wav

SENTENCES = (
    "Today we talk about the weather in the city and what it means for the weekend.",
    "Please open the window and let the fresh air in before the meeting starts.",
    "The train to the coast leaves every morning at seven and returns at night.",
    "Thank you for watching this short video and have a very nice day.",
    "Our garden needs water every evening when the summer is hot and dry.",
    "She bought three books, a lamp and a small green chair at the market.",
    "The museum opens at ten and closes early on Sundays and public holidays.",
    "We will meet again next week to look at the plans for the new bridge.",
    "A good breakfast with bread, cheese and fruit keeps you going until lunch.",
    "The children played football in the park until the sun went down.",
    "Remember to save your work often, because the power may go out.",
    "Music from the old radio filled the kitchen while we cooked dinner.",
    "Good morning, everyone.",
    "The coffee is ready.",
    "See you all tomorrow.",
    "Let us begin with the news.",
)


# -- the spoken video --------------------------------------------------------------------------


def spoken_s(directory: Path, sentence: str) -> float:
    """How long espeak-ng takes to say `sentence`, at the rate speech_wav uses."""
    part = directory / "measure.wav"
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(part), sentence], check=True)
    with wave.open(str(part)) as w:
        return w.getnframes() / RATE


def speech_video(
    directory: Path, out: Path, seconds: int, size: str, lengths: dict[str, float]
) -> list[str]:
    """`seconds` of test pattern at `out` with the sentences spoken over it: in turn, each round
    in another order, skipping any that no longer fits, then silence to the end. The sentences
    said, in order."""
    work = directory / f"speech{seconds}"
    work.mkdir(parents=True, exist_ok=True)
    chosen: list[str] = []
    t, n, misses = GAP_S, 0, 0
    while misses < len(SENTENCES):
        rnd, i = divmod(n, len(SENTENCES))
        sentence = SENTENCES[(i * 5 + rnd) % len(SENTENCES)]  # 5 is prime to 16: a permutation
        n += 1
        if t + lengths[sentence] + GAP_S > seconds:
            misses += 1
            continue
        chosen.append(sentence)
        t += lengths[sentence] + GAP_S
        misses = 0
    wav, _spoken = speech_wav(work, tuple(chosen))
    # The encoding of tests.media.make_clip; the sound padded with silence to the length.
    # fmt: off
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
         "-i", str(wav), "-af", "apad", "-t", f"{seconds:.3f}", "-map", "0:v", "-map", "1:a",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
         str(out)],
        check=True,
    )
    # fmt: on
    shutil.rmtree(work, ignore_errors=True)
    return chosen


# -- CPU -----------------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")
ProcTable = dict[int, tuple[int, float]]


def proc_table() -> ProcTable:
    """pid -> (parent pid, CPU seconds of the process and of its reaped children)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the name: state ppid ... utime(14) stime cutime cstime, counted from 1.
        cpu = sum(int(x) for x in fields[11:15]) / _TICK
        table[int(entry.name)] = (int(fields[1]), cpu)
    return table


def tree_cpu(pids: int | list[int], table: ProcTable | None = None) -> float:
    """CPU seconds used so far by `pids` and all their live descendants (and what they reaped),
    from `table` (read now if not given)."""
    table = proc_table() if table is None else table
    children: dict[int, list[int]] = {}
    for p, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(p)
    total, todo = 0.0, [pids] if isinstance(pids, int) else list(pids)
    while todo:
        p = todo.pop()
        total += table.get(p, (0, 0.0))[1]
        todo += children.get(p, [])
    return total


def machine_cpu() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


class Others:
    """The CPU used by everything but this process tree, as a share of one core, over a span."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.machine, self.ours = machine_cpu(), tree_cpu(os.getpid())

    def pct(self) -> float:
        wall = time.perf_counter() - self.started
        others = machine_cpu() - self.machine - (tree_cpu(os.getpid()) - self.ours)
        return max(0.0, 100 * others / wall) if wall > 0 else 0.0


# -- processes, Redis, the machine -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def epoch(iso: str) -> float:
    """A log line's or an event's ISO time as Unix seconds."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def delete_keys(redis_url: str, prefix: str) -> int:
    """Delete the bench's own keys (its prefix only); how many there were."""
    from redis import Redis

    client = Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
        return len(keys)
    finally:
        client.close()


def redis_version(redis_url: str) -> str | None:
    from redis import Redis

    client = Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        return str(client.info("server")["redis_version"])
    except Exception:
        return None
    finally:
        client.close()


def ffmpeg_version(exe: str) -> str:
    out = subprocess.run([exe, "-version"], capture_output=True, text=True, check=False).stdout
    first = out.splitlines()[0] if out else "?"
    return first.split(" Copyright")[0].removeprefix("ffmpeg version ").strip()


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
