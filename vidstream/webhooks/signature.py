"""The webhook signature: `Vidstream-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`.

The MAC covers `"<t>." + body` with the tenant's webhook secret, so a receiver can check both
who sent a delivery and when (a replayed old delivery fails the tolerance on `t`). The secret is
derived from SECRET_KEY and the tenant, so every gateway computes the same one without storage.
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "Vidstream-Signature"
TOLERANCE_S = 300  # how old a signature a receiver should accept, by default


def webhook_secret(secret_key: str, tenant: str) -> str:
    """The secret that signs `tenant`'s webhooks: HMAC-SHA256(SECRET_KEY, "webhook:" + tenant)."""
    return hmac.new(secret_key.encode(), f"webhook:{tenant}".encode(), hashlib.sha256).hexdigest()


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The `Vidstream-Signature` header value for `body`, signed now (or at `timestamp`)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_mac(secret, t, body)}"


def verify(
    secret: str, body: bytes, header: str, *, tolerance_s: float = TOLERANCE_S,
    now: float | None = None,
) -> bool:  # fmt: skip
    """True if `header` signs `body` with `secret` at a time within `tolerance_s` of now."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    expected = _mac(secret, t, body).encode()
    # Any v1 may match: a future key rotation can send two.
    return any(hmac.compare_digest(expected, v.encode()) for v in parts.get("v1", []))
