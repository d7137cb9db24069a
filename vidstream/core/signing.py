"""HMAC signatures for the gateway's own URLs (local storage) and for WebSocket tokens.

Stateless on purpose: any gateway or notifier process holding the same secret can check a URL or
a token, so these scale with the roles and need nothing stored in Redis.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import secrets
import time
from pathlib import Path
from urllib.parse import quote, urlencode

from vidstream.core.settings import Settings


class Signer:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, *parts: str) -> str:
        digest = hmac.new(self._secret, "\n".join(parts).encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")

    def label(self, *parts: str) -> str:
        """A short stable name for `parts` that reveals nothing of them without the secret (8
        hex digits: distinct enough among the workers of one deployment)."""
        message = "\n".join(("label", *parts)).encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:8]

    def ws_token(
        self, tenant: str, job_id: str, created_at: float, ttl_s: int, now: float | None = None
    ) -> str:
        """A token that lets a WebSocket client watch one job of one tenant until it expires.

        It expires at the end of a `ttl_s` window counted from the job's creation, at least
        `ttl_s / 2` from now: every request within a window gets the same token (an
        idempotent resend answers the same body), and no token lives longer than `ttl_s`.
        """
        now = time.time() if now is None else now
        windows = max(1, math.ceil((now - created_at + ttl_s / 2) / ttl_s))
        expires = int(created_at + windows * ttl_s)
        return f"{expires}.{self._mac('ws', tenant, job_id, str(expires))}"

    def check_ws_token(
        self, tenant: str, job_id: str, token: str, now: float | None = None
    ) -> bool:
        """Whether `token` was made for this tenant's job and has not expired."""
        expires, _, mac = token.partition(".")
        if not (expires.isascii() and expires.isdigit() and len(expires) <= 12):
            return False
        expected = self._mac("ws", tenant, job_id, expires)
        # Bytes, not str: compare_digest refuses non-ASCII strings with TypeError.
        valid = hmac.compare_digest(expected.encode(), mac.encode("utf-8", "replace"))
        return valid and int(expires) >= (time.time() if now is None else now)

    def object_url(
        self, base_url: str, method: str, key: str, expires: int, **params: str | int
    ) -> str:
        """A URL to the gateway's `/v1/objects/{key}`, valid for `method` until `expires`."""
        query = {"expires": str(expires), **{k: str(v) for k, v in params.items()}}
        query["sig"] = self._object_mac(method, key, query)
        return f"{base_url}/v1/objects/{quote(key)}?{urlencode(query)}"

    def check_object_url(self, method: str, key: str, query: dict[str, str]) -> bool:
        """True if `query` carries a valid, unexpired signature for `method` on `key`."""
        params = {k: v for k, v in query.items() if k != "sig"}
        if "expires" not in params:
            return False
        expected = self._object_mac(method, key, params)
        if not hmac.compare_digest(expected.encode(), query.get("sig", "").encode()):
            return False
        try:
            return int(params["expires"]) >= time.time()
        except ValueError:
            return False

    def _object_mac(self, method: str, key: str, params: dict[str, str]) -> str:
        # Parameters in one canonical order, so the URL's own order never matters.
        return self._mac("object", method, key, *(f"{k}={v}" for k, v in sorted(params.items())))


def load_secret(settings: Settings) -> bytes:
    """SECRET_KEY, or a random one kept in the data dir so processes on one machine share it."""
    if settings.secret_key:
        return settings.secret_key.encode()
    path = Path(settings.data_dir) / "secret"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write the candidate aside and hard-link it into place: the link either wins whole or finds
    # another process's secret already there, so no reader ever sees a half-written file.
    candidate = path.with_name(f".secret-{os.getpid()}-{secrets.token_hex(4)}")
    candidate.write_text(secrets.token_urlsafe(32))
    candidate.chmod(0o600)
    try:
        os.link(candidate, path)
    except FileExistsError:
        pass
    finally:
        candidate.unlink()
    return path.read_bytes().strip()
