"""The deployment files describe a stack vidstream accepts (no Docker engine needed to check)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from vidstream.settings import Settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
ROLES = {"gateway", "transcribe", "render", "notifier"}


REQUIRED = {"SECRET_KEY", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "VIDSTREAM_API_KEYS"}
GIVEN = {
    "SECRET_KEY": "s" * 64, "MINIO_ROOT_USER": "vidstream", "MINIO_ROOT_PASSWORD": "p" * 24,
    "VIDSTREAM_API_KEYS": "acme:vs_example",
}  # fmt: skip


def substitute(value: str) -> str:
    """Compose's ${NAME:-default} with the defaults and ${NAME:?error} with what an operator
    sets, as `docker compose config` would."""
    value = re.sub(r"\$\{([A-Z_]+):\?[^}]*\}", lambda m: GIVEN[m.group(1)], value)
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_compose_ships_no_secret_and_no_open_storage() -> None:
    """Compose refuses to start without SECRET_KEY, MinIO's credentials and API keys (no
    default), and publishes no MinIO port unless asked to."""
    text = (DEPLOY / "docker-compose.yml").read_text()
    for name in REQUIRED:
        assert f"${{{name}:?" in text, name
        assert f"${{{name}:-" not in text, name
    assert "ports" not in compose()["services"]["minio"]


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return doc


def test_compose_runs_redis_minio_and_the_four_roles() -> None:
    """Redis with AOF, MinIO with its bucket created at start, and each role from one image."""
    services = compose()["services"]
    assert set(services) == {"redis", "minio", "createbucket", *ROLES}
    redis = services["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "yes"
    assert "mc mb --ignore-existing local/vidstream" in " ".join(
        services["createbucket"]["entrypoint"]
    )
    images = {services[role]["image"] for role in ROLES}
    assert images == {"vidstream:latest"}
    for role in ROLES:
        assert services[role]["command"] == [role]
        assert services[role]["depends_on"]["createbucket"]["condition"] == (
            "service_completed_successfully"
        )
    assert services["gateway"]["ports"] == ["8080:8080"]
    assert services["notifier"]["ports"] == ["8765:8765"]


def test_compose_settings_are_valid_vidstream_settings() -> None:
    """Every role's environment passes vidstream's own settings checks, pointing at MinIO."""
    services = compose()["services"]
    for role in ROLES:
        env = {k: substitute(str(v)) for k, v in services[role]["environment"].items()}
        settings = Settings.from_env(env)
        assert settings.storage == "s3"
        assert settings.s3_endpoint_url == "http://minio:9000"
        assert settings.s3_bucket == "vidstream"
        assert settings.redis_url == "redis://redis:6379/0"
        assert settings.s3_presign_endpoint_url == "http://localhost:9000"


def test_dockerfile_runs_vidstream() -> None:
    """The image installs the project and runs `vidstream`, the role given as its command."""
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    entrypoint = next(line for line in lines if line.startswith("ENTRYPOINT"))
    assert shlex.split(entrypoint.split(" ", 1)[1].strip("[]").replace(",", " ")) == ["vidstream"]
    assert any("pip install" in line for line in lines)
    assert any("HF_HUB_OFFLINE=1" in line for line in lines)


def test_r2_example_is_accepted() -> None:
    """deploy/.env.example, as written, is a valid R2 configuration."""
    env = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    settings = Settings.from_env(env)
    assert settings.storage == "s3"
    assert settings.s3_endpoint_url.endswith(".r2.cloudflarestorage.com")
    assert (settings.s3_region_name, settings.s3_addressing) == ("auto", "path")
