"""API keys and tenants: every key maps to one tenant; keys are kept and compared as hashes.

A key looks like `vs_<id>_<secret>`: the id (8 hex characters) names it in listings and for
revoking, the secret is 32 random bytes. Only `sha256(key)` is kept, in the keys file (JSON
lines, `VIDSTREAM_API_KEYS_FILE`) or given in `VIDSTREAM_API_KEYS` (`tenant:key` or
`tenant:sha256:<hex>`, comma-separated). A key's plain text exists once: when it is created.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from vidstream.core.errors import ConfigError
from vidstream.core.settings import Settings

_TENANT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
RELOAD_EVERY_S = 2.0  # how often a running process looks for keys created or revoked


def check_tenant(name: str) -> str:
    if not _TENANT.fullmatch(name):
        raise ConfigError(
            f"tenant {name[:40]!r} must be 1-63 lowercase letters, digits, '-' or '_'"
        )
    return name


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str  # public: names the key in listings, logs and rate limits
    tenant: str
    hash: str  # sha256 of the whole key, hex
    created_at: float = 0.0
    admin: bool = False  # may also use the operator routes (pause, drain, every tenant's stats)
    label: str = ""


def new_key(tenant: str, *, admin: bool = False, label: str = "") -> tuple[str, ApiKey]:
    """A fresh key and its record; the plain key is returned once and never stored."""
    key_id = secrets.token_hex(4)
    key = f"vs_{key_id}_{secrets.token_urlsafe(32)}"
    record = ApiKey(key_id, check_tenant(tenant), digest(key), time.time(), admin, label[:100])
    return key, record


def parse_env(value: str) -> list[ApiKey]:
    """`VIDSTREAM_API_KEYS`: `tenant:key` or `tenant:sha256:<hex>` entries, comma-separated."""
    records: list[ApiKey] = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        tenant, sep, rest = entry.partition(":")
        if not sep or not rest:
            raise ConfigError("VIDSTREAM_API_KEYS entries look like tenant:key")
        hashed = rest.removeprefix("sha256:")
        if rest.startswith("sha256:") and not _HEX64.fullmatch(hashed):
            raise ConfigError("VIDSTREAM_API_KEYS: sha256: must be followed by 64 hex digits")
        key_hash = hashed if rest.startswith("sha256:") else digest(rest)
        records.append(ApiKey(f"env{len(records)}", check_tenant(tenant), key_hash))
    return records


class KeysFile:
    """The keys file: one JSON object per line; writers hold an exclusive lock."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[ApiKey]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        records: list[ApiKey] = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(ApiKey(**json.loads(line)))
                except (ValueError, TypeError) as exc:
                    raise ConfigError(f"{self.path}:{number} is not a key record ({exc})") from None
        return records

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _write(self, records: list[ApiKey]) -> None:
        # Written aside and renamed into place, so a reader sees the old file or the new one.
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text("".join(json.dumps(asdict(r)) + "\n" for r in records))
        tmp.chmod(0o600)
        tmp.replace(self.path)

    def add(self, record: ApiKey) -> None:
        with self._locked():
            self._write([*self.read(), record])

    def revoke(self, key_id: str) -> bool:
        with self._locked():
            records = self.read()
            kept = [r for r in records if r.id != key_id]
            if len(kept) == len(records):
                return False
            self._write(kept)
            return True


def keys_file(settings: Settings) -> KeysFile:
    if settings.api_keys_file:
        return KeysFile(Path(settings.api_keys_file))
    return KeysFile(Path(settings.data_dir) / "api-keys.jsonl")


class KeyRing:
    """The keys a process accepts: from the environment and the keys file, which it re-reads
    when it changes (a key created or revoked works within a few seconds, without restarts)."""

    def __init__(self, settings: Settings) -> None:
        self.file = keys_file(settings)
        self._env = parse_env(settings.api_keys)
        self._by_hash: dict[str, ApiKey] = {}
        self._stamp: tuple[float, int] | None = None
        self._checked = -RELOAD_EVERY_S
        self._reload()

    def _reload(self) -> None:
        try:
            stat = self.file.path.stat()
            stamp: tuple[float, int] | None = (stat.st_mtime, stat.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp or not self._by_hash:
            self._by_hash = {r.hash: r for r in [*self._env, *self.file.read()]}
            self._stamp = stamp
        self._checked = time.monotonic()

    def __len__(self) -> int:
        self._maybe_reload()
        return len(self._by_hash)

    def _maybe_reload(self) -> None:
        if time.monotonic() - self._checked >= RELOAD_EVERY_S:
            self._reload()

    def find(self, key: str) -> ApiKey | None:
        """The record of `key`, or None. Only the key's hash is ever compared."""
        if len(key) > 512:  # no key is this long; do not hash megabytes for nothing
            return None
        self._maybe_reload()
        return self._by_hash.get(digest(key))
