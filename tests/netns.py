"""Hosts of a test's own: network namespaces wired to one bridge, like machines on one switch.

Each host is a namespace with one veth pair whose other end is a port of a bridge in a namespace
of its own (the switch); the host's address is on a private /24 that exists only inside these
namespaces. Nothing touches the machine's own interfaces or routes. A host's link is cut by
taking its switch port down: its packets go nowhere and its connections hang, as on a real
partition, until the port comes back up.

Processes run on a host with `Host.command(...)` (`ip netns exec`, and a host name of its own
through a new UTS namespace); the test's own calls reach a host's network from a thread that
joined its namespace (`Host.call`). Making namespaces needs root: `Network()` raises
`Unavailable` with the reason where they cannot be made.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import os
import secrets
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

SUBNET = "10.19.0"  # a /24 that lives only on this test's bridge
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class Unavailable(Exception):
    """Network namespaces cannot be made here (not root, no `ip`, a sandbox that forbids them)."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _enter(namespace: str) -> None:
    """Move the calling thread (only it) into a network namespace."""
    fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns {namespace}: {os.strerror(errno)}")
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Host:
    name: str  # its host name too
    namespace: str
    address: str
    port: str  # its veth's other end, on the switch

    def command(self, *argv: str) -> list[str]:
        """`argv` run on this host: in its network namespace, under its own host name."""
        inner = 'hostname "$0" && exec "$@"'
        return ["ip", "netns", "exec", self.namespace, "unshare", "--uts", "--", "sh", "-c",
                inner, self.name, *argv]  # fmt: skip

    async def call(self, fn: Callable[[], T]) -> T:
        """`fn()` run in a thread of its own that joined this host's network: the sockets it
        opens are this host's."""
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def main() -> None:
            try:
                _enter(self.namespace)
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)

        threading.Thread(target=main, name=f"on-{self.name}", daemon=True).start()
        return await asyncio.wrap_future(done)


class Network:
    """A switch and the hosts plugged into it; `close()` deletes every namespace it made."""

    def __init__(self) -> None:
        self.tag = f"vs{secrets.token_hex(3)}"
        self.switch = f"{self.tag}-switch"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        try:
            self._add_namespace(self.switch)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            raise Unavailable(f"network namespaces cannot be made here: {exc}") from exc
        try:
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self._namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def add(self, name: str) -> Host:
        """A host called `name` on the switch, with the next address."""
        host = Host(name, f"{self.tag}-{name}", f"{SUBNET}.{len(self.hosts) + 1}",
                    f"{self.tag[2:]}{name}"[:15])  # fmt: skip
        self._add_namespace(host.namespace)
        # Made from inside the switch: the pair never appears in the machine's own namespace.
        _ip("-n", self.switch, "link", "add", host.port, "type", "veth",
            "peer", "name", "eth0", "netns", host.namespace)  # fmt: skip
        _ip("-n", self.switch, "link", "set", host.port, "master", "br0")
        _ip("-n", self.switch, "link", "set", host.port, "up")
        _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _ip("-n", host.namespace, "link", "set", "eth0", "up")
        self.hosts[name] = host
        return host

    def cut(self, host: Host) -> None:
        """Unplug `host`: what it sends is lost, and nothing reaches it."""
        _ip("-n", self.switch, "link", "set", host.port, "down")

    def mend(self, host: Host) -> None:
        _ip("-n", self.switch, "link", "set", host.port, "up")

    def close(self) -> None:
        """Delete the namespaces (their veths and the bridge go with them); safe to call twice."""
        while self._namespaces:
            name = self._namespaces.pop()
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10,
                           check=False)  # fmt: skip
