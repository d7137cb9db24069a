"""Compose templates: named timelines with `{{placeholders}}`, kept per tenant in one Redis hash
(`keys.templates`). A job names one and gives `variables` instead of a whole timeline."""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from typing import Any, cast

from redis.asyncio import Redis

from vidstream.state import scripts
from vidstream.state.keys import Keys

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_TEMPLATES = 200  # per tenant
MAX_BYTES = 256 * 1024  # of one template's JSON


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    timeline: dict[str, Any]  # as written, placeholders and all (validated when saved)
    variables: list[str]  # the placeholders it uses
    description: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TemplateLimit(Exception):
    """The tenant keeps MAX_TEMPLATES already."""


class Templates:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis, self.keys = redis, keys
        self._save = scripts.register(redis, "template_save")

    async def save(self, tenant: str, template: Template) -> bool:
        """Store `template` (replacing one of its name: True); `TemplateLimit` when full."""
        old = await self.get(tenant, template.name)
        now = time.time()
        kept = Template(template.name, template.timeline, template.variables,
                        template.description, old.created_at if old else now, now)  # fmt: skip
        replaced = int(await self._save(
            keys=[self.keys.templates(tenant)],
            args=[template.name, json.dumps(kept.to_dict()), MAX_TEMPLATES],
        ))  # fmt: skip
        if replaced < 0:
            raise TemplateLimit(tenant)
        return replaced == 1

    async def get(self, tenant: str, name: str) -> Template | None:
        raw = await self.redis.hget(self.keys.templates(tenant), name)
        return None if raw is None else Template(**json.loads(raw))

    async def list(self, tenant: str) -> list[Template]:
        raw = cast(dict[str, str], await self.redis.hgetall(self.keys.templates(tenant)))
        return sorted((Template(**json.loads(v)) for v in raw.values()), key=lambda t: t.name)

    async def delete(self, tenant: str, name: str) -> bool:
        return bool(await self.redis.hdel(self.keys.templates(tenant), name))
