"""Who may watch a job's events: the notifier's and the gateway's Server-Sent Events' rule."""

from __future__ import annotations

from vidstream.job.model import Job
from vidstream.services import Services


def grants(services: Services, token: str, job: Job) -> bool:
    """Whether `token` may watch `job`: the job's own token, or an API key of its tenant."""
    if services.signer.check_ws_token(job.tenant, job.id, token):
        return True
    if services.api_keys is None:
        return False
    key = services.api_keys.find(token)
    return key is not None and key.tenant == job.tenant
