"""Webhooks: a job's end POSTed to the URL it was created with, signed, retried, never inward.

- `signature`: the per-tenant secret and the `Vidstream-Signature` header (pure);
- `targets`: which URLs and addresses a webhook may reach (pure), and resolving a target once;
- `post`: one HTTP attempt, connected to exactly the addresses that were checked;
- `queue`: the Redis side: the webhook stream's consumer group and the delayed-retry set;
- `deliver`: the `WebhookDeliverer` component every gateway process runs.
"""

from __future__ import annotations

from vidstream.webhooks.signature import webhook_secret
from vidstream.webhooks.targets import check_webhook_url

__all__ = ["check_webhook_url", "webhook_secret"]
