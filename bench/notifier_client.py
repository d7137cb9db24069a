"""The processes bench/notifier.py starts besides the notifier: WebSocket clients, and the floor.

Clients are multiprocessing children (`client_process`): each holds groups of connections (one
group per server measured), opened on command from the harness over a pipe. Every message a
group receives adds one to the group's counter in shared memory, which the harness reads without
asking, to pace its publisher. In latency mode a connection also parses each event and keeps
(the event's `at`, the time of receipt); the harness collects them afterwards.

The floor is a process of its own:

    python bench/notifier_client.py floor --port PORT

a bare `websockets` server (compression off, uvloop like `vidstream notifier`) that answers a
`subscribe` with a small snapshot and keeps a set of subscribers per job. The harness feeds it
over one more WebSocket, `{"type": "publish", "events": [...]}` with events shaped exactly as
vidstream's; for each event the floor serialises it once and hands it to `broadcast`, which
writes it to every subscriber of its job without waiting. Nothing less can deliver an event.

The harness's side of these processes is here too: `Clients` (the client processes, their
commands and counters) and `Server` (a server process: start, readiness, log, stop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import socket
import threading
import time
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed, WebSocketException

from vidstream.core import process

GROUPS = {"vidstream": 0, "floor": 1, "warm": 2}  # counter slot of each group in a process
SLOTS = len(GROUPS)
CONNECT_CONCURRENCY = 32  # handshakes in flight per process: beyond, the listen backlog drops SYNs
TIMEOUT_S = 60.0


def raise_fd_limit() -> int:
    """Lift this process's open-file limit to the hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def run(coro: Any) -> Any:
    """Run `coro` on uvloop, as `vidstream notifier` does."""
    import uvloop

    return uvloop.run(coro)


# --- the floor -----------------------------------------------------------------------------------


async def floor(port: int) -> None:
    subscribers: dict[str, set[ServerConnection]] = defaultdict(set)

    async def handler(ws: ServerConnection) -> None:
        watched: list[str] = []
        try:
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("type") == "publish":  # from the harness's feeder connection
                    for event in msg["events"]:
                        broadcast(subscribers.get(event["job_id"], ()), json.dumps(event))
                elif msg.get("type") == "subscribe":
                    job_id = str(msg["job_id"])
                    subscribers[job_id].add(ws)
                    watched.append(job_id)
                    snapshot = {"type": "snapshot", "job": {"id": job_id}, "last_event_id": "0-0"}
                    await ws.send(json.dumps(snapshot))
        except ConnectionClosed:
            pass
        finally:
            for job_id in watched:
                subs = subscribers.get(job_id)
                if subs is not None:
                    subs.discard(ws)
                    if not subs:
                        del subscribers[job_id]

    # Keepalive and frame limits as `vidstream notifier` sets them.
    async with serve(
        handler,
        "127.0.0.1",
        port,
        compression=None,
        max_size=64 * 1024,
        ping_interval=20,
        ping_timeout=20,
    ):
        await asyncio.Future()  # until the harness terminates the process


# --- clients -------------------------------------------------------------------------------------


class Group:
    """The connections of one process to one server."""

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.conns: set[ClientConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.jobs: list[str] = []  # the job of each open subscription, in order of opening
        self.latency = False
        self.samples = array("d")  # pairs: the event's `at`, the time it was received
        self.closed: Counter[str] = Counter()  # closes the harness did not ask for
        self.failed: Counter[str] = Counter()  # connections or subscriptions that failed
        self.other: Counter[str] = Counter()  # messages other than events, in latency mode
        self.closing = False


def _at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()  # "...T18:09:20.102Z": UTC, 1 ms


async def _read(ws: ClientConnection, group: Group, counters: Any) -> None:
    slot = group.slot
    try:
        async for raw in ws:
            counters[slot] += 1
            if group.latency:
                now = time.time()
                msg = json.loads(raw)
                if msg.get("type") == "event":
                    group.samples.append(_at(msg["at"]))
                    group.samples.append(now)
                else:
                    group.other[str(msg.get("type"))] += 1
    except ConnectionClosed:
        pass
    finally:
        group.conns.discard(ws)
        if not group.closing:
            group.closed[f"{ws.close_code} {ws.close_reason}".strip()] += 1


async def _open(
    url: str, job_id: str, token: str, group: Group, counters: Any, gate: asyncio.Semaphore
) -> None:
    async with gate:
        try:
            ws = await connect(
                url,
                compression=None,
                proxy=None,
                ping_interval=None,
                open_timeout=TIMEOUT_S,
                close_timeout=2,
            )
        except (OSError, WebSocketException, TimeoutError) as exc:
            group.failed[f"connect: {type(exc).__name__}: {exc}"[:160]] += 1
            return
        try:
            await ws.send(json.dumps({"type": "subscribe", "job_id": job_id, "token": token}))
            async with asyncio.timeout(TIMEOUT_S):
                reply = json.loads(await ws.recv())
        except (ConnectionClosed, TimeoutError) as exc:
            group.failed[f"subscribe: {type(exc).__name__}: {exc}"[:160]] += 1
            await ws.close()
            return
        if reply.get("type") != "snapshot":
            group.failed[f"subscribe: {reply.get('type')} {reply.get('code', '')}"] += 1
            await ws.close()
            return
    group.conns.add(ws)
    group.jobs.append(job_id)
    task = asyncio.create_task(_read(ws, group, counters))
    group.tasks.add(task)
    task.add_done_callback(group.tasks.discard)


async def _close(group: Group) -> None:
    group.closing = True
    conns = list(group.conns)
    for start in range(0, len(conns), 500):
        await asyncio.gather(
            *(ws.close() for ws in conns[start : start + 500]), return_exceptions=True
        )
    for task in list(group.tasks):
        task.cancel()
    await asyncio.gather(*group.tasks, return_exceptions=True)


async def _serve(pipe: Connection, counters: Any) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def listen() -> None:  # in a thread: the pipe must stay blocking (uvloop's add_reader wouldn't)
        while True:
            message = pipe.recv()
            loop.call_soon_threadsafe(inbox.put_nowait, message)
            if message[0] == "exit":
                return

    threading.Thread(target=listen, daemon=True).start()
    groups: dict[str, Group] = {}
    while True:
        command, args = await inbox.get()
        if command == "exit":
            for group in groups.values():
                await _close(group)
            pipe.send(None)
            return
        name = args["group"]
        reply: Any = None
        if command == "connect":
            group = groups[name] = Group(args["slot"])
            gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
            started = time.monotonic()
            await asyncio.gather(
                *(
                    _open(args["url"], job_id, token, group, counters, gate)
                    for job_id, token in args["subs"]
                )
            )
            reply = {
                "opened": len(group.conns),
                "jobs": group.jobs,
                "failed": dict(group.failed),
                "s": time.monotonic() - started,
            }
        elif command == "latency":
            groups[name].latency = args["on"]
            groups[name].samples = array("d")
        elif command == "samples":
            reply, groups[name].samples = groups[name].samples.tobytes(), array("d")
        elif command == "status":
            group = groups[name]
            reply = {
                "open": len(group.conns),
                "closed": dict(group.closed),
                "other": dict(group.other),
            }
        elif command == "close":
            await _close(groups.pop(name))
        pipe.send(reply)


def client_process(pipe: Connection, counters: Any) -> None:
    """The body of one client process: obey commands from `pipe` until told to exit."""
    raise_fd_limit()
    run(_serve(pipe, counters))


# --- the harness's handles on processes ---------------------------------------------------------


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    proc: asyncio.subprocess.Process
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    async def start(
        cls, name: str, argv: list[str], env: dict[str, str], port: int, log: Path
    ) -> Server:
        with log.open("wb") as out:
            proc = await process.spawn(argv, env=env, stdout=out.fileno(), stderr=out.fileno())
        server = cls(name, proc, port, log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                break
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return server
        await server.stop()
        raise RuntimeError(f"{name} did not start; its log:\n{server.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def stop(self) -> None:
        await process.terminate(self.proc, grace_s=15)  # its whole group: what it started too


def base_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")  # nothing else: no stray settings
    return {k: os.environ[k] for k in keep if k in os.environ}


class Clients:
    """The client processes, commanded over pipes; their receipt counters in shared memory."""

    def __init__(self, procs: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.counters: Any = ctx.RawArray("q", procs * SLOTS)
        self.pipes: list[Any] = []
        self.procs: list[Any] = []
        for _ in range(procs):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=client_process, args=(theirs, self.counters), daemon=True)
            proc.start()
            theirs.close()
            self.pipes.append(ours)
            self.procs.append(proc)

    def received(self, group: str) -> int:
        slot = GROUPS[group]
        return sum(self.counters[i * SLOTS + slot] for i in range(len(self.procs)))

    def cpu_s(self) -> float:
        return sum(cpu_s(p.pid) for p in self.procs)

    async def ask(self, command: str, args: list[dict[str, Any]]) -> list[Any]:
        async def one(pipe: Any, arg: dict[str, Any]) -> Any:
            await asyncio.to_thread(pipe.send, (command, arg))
            return await asyncio.to_thread(pipe.recv)

        return list(
            await asyncio.gather(*(one(p, a) for p, a in zip(self.pipes, args, strict=True)))
        )

    async def tell(self, command: str, group: str, **extra: Any) -> list[Any]:
        return await self.ask(command, [{"group": group, **extra}] * len(self.pipes))

    async def connect(self, group: str, url: str, subs: list[tuple[str, str]]) -> dict[str, Any]:
        n = len(self.pipes)
        args = [
            {"group": group, "slot": i * SLOTS + GROUPS[group], "url": url, "subs": subs[i::n]}
            for i in range(n)
        ]
        replies = await self.ask("connect", args)
        failed: Counter[str] = Counter()
        for reply in replies:
            failed.update(reply["failed"])
        return {
            "opened": sum(r["opened"] for r in replies),
            "s": max(r["s"] for r in replies),
            "jobs": [j for r in replies for j in r["jobs"]],
            "failed": dict(failed),
        }

    async def samples(self, group: str) -> list[tuple[float, float]]:
        pairs: list[tuple[float, float]] = []
        for raw in await self.tell("samples", group):
            values = array("d")
            values.frombytes(raw)
            pairs += zip(values[0::2], values[1::2], strict=True)
        return pairs

    async def stop(self) -> None:
        try:
            async with asyncio.timeout(30):
                await self.ask("exit", [{}] * len(self.pipes))
        except (TimeoutError, OSError, EOFError):
            pass
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description="The floor server of bench/notifier.py.")
    cli.add_argument("role", choices=["floor"])
    cli.add_argument("--port", type=int, required=True)
    raise_fd_limit()
    run(floor(cli.parse_args().port))
