"""`vidstream keys create|list|revoke|webhook-secret`: manage API keys in the keys file.

Running roles re-read the file within seconds, so a created key works and a revoked one stops
working without a restart.
"""

from __future__ import annotations

import json
import time
from typing import TextIO

from vidstream.core.auth import keys_file, new_key
from vidstream.core.errors import ConfigError
from vidstream.core.settings import Settings


def create(settings: Settings, tenant: str, admin: bool, label: str, out: TextIO,
           err: TextIO) -> int:  # fmt: skip
    """Add a key for `tenant`; print the key alone on `out`, once. Only its hash is kept."""
    key, record = new_key(tenant, admin=admin, label=label)
    store = keys_file(settings)
    store.add(record)
    out.write(key + "\n")
    role = "an admin key" if admin else "a key"
    err.write(f"created {role} {record.id} for tenant {tenant} in {store.path}; "
              "it is shown only this once\n")  # fmt: skip
    return 0


def list_keys(settings: Settings, out: TextIO, as_json: bool = False) -> int:
    """The keys file's keys: ids, tenants, labels; never a key, nor its hash."""
    records = keys_file(settings).read()
    if as_json:
        listed = [
            {"id": r.id, "tenant": r.tenant, "admin": r.admin, "label": r.label,
             "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.created_at))}
            for r in records
        ]  # fmt: skip
        out.write(json.dumps({"keys": listed}, indent=2) + "\n")
        return 0
    if not records:
        out.write("no keys (create one with: vidstream keys create --tenant NAME)\n")
        return 0
    out.write(f"{'id':<9} {'tenant':<20} {'admin':<5} {'created':<20} label\n")
    for r in records:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.created_at))
        admin = "yes" if r.admin else "no"
        out.write(f"{r.id:<9} {r.tenant:<20} {admin:<5} {created:<20} {r.label}\n")
    return 0


def revoke(settings: Settings, key_id: str, out: TextIO) -> int:
    if not keys_file(settings).revoke(key_id):
        out.write(f"no key {key_id}\n")
        return 1
    out.write(f"revoked {key_id}\n")
    return 0


def webhook_secret(settings: Settings, tenant: str, out: TextIO) -> int:
    """The secret `tenant`'s webhooks are signed with (derived from SECRET_KEY)."""
    from vidstream.core.auth import check_tenant
    from vidstream.core.signing import load_secret
    from vidstream.webhooks.signature import webhook_secret as derive

    try:
        check_tenant(tenant)
    except ConfigError as exc:
        out.write(f"{exc}\n")
        return 2
    out.write(derive(load_secret(settings).decode(), tenant) + "\n")
    return 0
