"""One frozen `Settings`, read from the environment once in `main()` and passed explicitly.

Every value has a typed default; a malformed value fails loudly at start-up with the name of
the variable, so a typo never turns into a job that fails an hour later.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from vidstream.errors import ConfigError

T = TypeVar("T")

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True, slots=True)
class Settings:
    # Redis: job state and every stream between roles.
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "vs"
    redis_timeout_s: float = 5.0

    # Where the embedded defaults keep their files (local storage, private Redis, temp dirs).
    data_dir: Path = Path("data")
    storage: str = "local"  # local | s3
    secret_key: str = field(default="", repr=False)

    # Object storage (VIDSTREAM_STORAGE=s3): Cloudflare R2, AWS S3, MinIO.
    s3_endpoint_url: str = ""  # empty for AWS
    s3_bucket: str = ""
    s3_region: str = ""  # default: "auto" with an endpoint (R2), else us-east-1
    s3_access_key_id: str = ""
    s3_secret_access_key: str = field(default="", repr=False)
    s3_addressing_style: str = ""  # path | virtual | auto; default: path with an endpoint
    s3_public_url: str = ""  # optional base for public output links
    # The endpoint as clients reach it, for presigned URLs, when workers use another one (MinIO
    # in docker compose is http://minio:9000 inside, http://localhost:9000 outside).
    s3_presign_endpoint_url: str = ""
    # An upload holds about (2.5 x concurrency + 1) parts in memory (botocore copies each part
    # it sends): 8 MiB x 2 is about 50 MB whatever the file's size (tests/test_large_files.py).
    s3_multipart_threshold: int = 8 * 1024 * 1024  # also the part size
    s3_multipart_concurrency: int = 2
    s3_timeout_s: float = 30.0

    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    public_url: str = ""  # the gateway as clients reach it; default derived from host/port
    cors_origins: tuple[str, ...] = ("*",)
    notifier_host: str = "127.0.0.1"
    notifier_port: int = 8765
    public_ws_url: str = ""  # the notifier as clients reach it; default derived from host/port

    max_upload_bytes: int = 4 * 1024**3
    max_duration_s: float = 4 * 3600.0
    upload_url_ttl_s: int = 900
    download_url_ttl_s: int = 3600
    job_ttl_s: int = 7 * 24 * 3600

    # Workers.
    concurrency: int = 1
    ffmpeg: str = "auto"  # "auto" = the pinned imageio-ffmpeg build, else `ffmpeg` on PATH
    x264_preset: str = "veryfast"
    x264_crf: int = 21
    whisper_model: str = ""  # a CTranslate2 model directory; default: bundled tiny.en
    # One thread per Whisper server: on 2-core machines two threads were slower than one and
    # used twice the CPU (bench/whisper_threads.py); scale with more servers instead.
    whisper_threads: int = 1
    whisper_beam_size: int = 5
    whisper_load_timeout_s: float = 120.0
    whisper_range_s: float = 1200.0  # long sources are transcribed this many seconds at a time
    probe_timeout_s: float = 30.0
    shutdown_grace_s: float = 30.0

    # Recovery. A worker holds each job it runs on a lease it renews every third of this; a
    # job whose worker died is taken up by another once this has passed.
    visibility_timeout_s: float = 30.0
    job_max_attempts: int = 3  # tries per stage, crashes included
    retry_base_delay_s: float = 5.0  # then x2 per attempt, with jitter
    retry_max_delay_s: float = 300.0

    log_level: str = "info"
    log_format: str = "auto"  # auto | json | console

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables; raise `ConfigError` naming a bad one."""
        env = os.environ if env is None else env
        r = _Reader(env)
        d = cls()  # defaults (with slots, class attributes are descriptors, not defaults)
        settings = cls(
            redis_url=r.text("REDIS_URL", d.redis_url),
            redis_prefix=r.text("REDIS_PREFIX", d.redis_prefix),
            redis_timeout_s=r.number("REDIS_TIMEOUT_S", d.redis_timeout_s, float, low=0.1),
            data_dir=Path(r.text("VIDSTREAM_DATA_DIR", str(d.data_dir))),
            storage=r.choice("VIDSTREAM_STORAGE", d.storage, ("local", "s3")),
            secret_key=r.text("SECRET_KEY", d.secret_key),
            s3_endpoint_url=r.url("S3_ENDPOINT_URL", ("http", "https")),
            s3_bucket=r.text("S3_BUCKET", d.s3_bucket),
            s3_region=r.text("S3_REGION", d.s3_region),
            s3_access_key_id=r.text("AWS_ACCESS_KEY_ID", d.s3_access_key_id),
            s3_secret_access_key=r.text("AWS_SECRET_ACCESS_KEY", d.s3_secret_access_key),
            s3_addressing_style=r.choice(
                "S3_ADDRESSING_STYLE", d.s3_addressing_style, ("path", "virtual", "auto")
            )
            if r.text("S3_ADDRESSING_STYLE", "")
            else "",
            s3_public_url=r.url("S3_PUBLIC_URL", ("http", "https")),
            s3_presign_endpoint_url=r.url("S3_PRESIGN_ENDPOINT_URL", ("http", "https")),
            s3_multipart_threshold=r.number(
                "S3_MULTIPART_THRESHOLD",
                d.s3_multipart_threshold,
                int,
                low=5 * 1024 * 1024,
                high=5 * 1024**3,
            ),
            s3_multipart_concurrency=r.number(
                "S3_MULTIPART_CONCURRENCY", d.s3_multipart_concurrency, int, low=1, high=64
            ),
            s3_timeout_s=r.number("S3_TIMEOUT_S", d.s3_timeout_s, float, low=1),
            gateway_host=r.text("GATEWAY_HOST", d.gateway_host),
            gateway_port=r.number("GATEWAY_PORT", d.gateway_port, int, low=0, high=65535),
            public_url=r.url("PUBLIC_URL", ("http", "https")),
            cors_origins=r.csv("CORS_ORIGINS", d.cors_origins),
            notifier_host=r.text("NOTIFIER_HOST", d.notifier_host),
            notifier_port=r.number("NOTIFIER_PORT", d.notifier_port, int, low=0, high=65535),
            public_ws_url=r.url("PUBLIC_WS_URL", ("ws", "wss")),
            max_upload_bytes=r.number("MAX_UPLOAD_BYTES", d.max_upload_bytes, int, low=1),
            max_duration_s=r.number("MAX_DURATION_S", d.max_duration_s, float, low=1),
            upload_url_ttl_s=r.number("UPLOAD_URL_TTL_S", d.upload_url_ttl_s, int, low=1),
            download_url_ttl_s=r.number("DOWNLOAD_URL_TTL_S", d.download_url_ttl_s, int, low=1),
            job_ttl_s=r.number("JOB_TTL_S", d.job_ttl_s, int, low=60),
            concurrency=r.number("CONCURRENCY", d.concurrency, int, low=1, high=64),
            ffmpeg=r.text("FFMPEG_BINARY", d.ffmpeg),
            x264_preset=r.choice("X264_PRESET", d.x264_preset, _X264_PRESETS),
            x264_crf=r.number("X264_CRF", d.x264_crf, int, low=0, high=51),
            whisper_model=r.text("WHISPER_MODEL", d.whisper_model),
            whisper_threads=r.number("WHISPER_THREADS", d.whisper_threads, int, low=1, high=256),
            whisper_beam_size=r.number("WHISPER_BEAM_SIZE", d.whisper_beam_size, int, low=1),
            whisper_load_timeout_s=r.number(
                "WHISPER_LOAD_TIMEOUT_S", d.whisper_load_timeout_s, float, low=1
            ),
            whisper_range_s=r.number("WHISPER_RANGE_S", d.whisper_range_s, float, low=60),
            probe_timeout_s=r.number("PROBE_TIMEOUT_S", d.probe_timeout_s, float, low=1),
            shutdown_grace_s=r.number("SHUTDOWN_GRACE_S", d.shutdown_grace_s, float, low=0),
            visibility_timeout_s=r.number(
                "VISIBILITY_TIMEOUT_S", d.visibility_timeout_s, float, low=1, high=3600
            ),
            job_max_attempts=r.number("JOB_MAX_ATTEMPTS", d.job_max_attempts, int, low=1, high=100),
            retry_base_delay_s=r.number("RETRY_BASE_DELAY_S", d.retry_base_delay_s, float, low=0),
            retry_max_delay_s=r.number("RETRY_MAX_DELAY_S", d.retry_max_delay_s, float, low=0),
            log_level=r.choice("LOG_LEVEL", d.log_level, ("debug", "info", "warning", "error")),
            log_format=r.choice("LOG_FORMAT", d.log_format, ("auto", "json", "console")),
        )
        settings.check_storage()
        if not _PREFIX_RE.match(settings.redis_prefix):
            raise ConfigError("REDIS_PREFIX must be 1-32 characters of letters, digits, _ . -")
        if urlsplit(settings.redis_url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(
                f"REDIS_URL must be a redis:// or rediss:// URL: {settings.redis_url!r}"
            )
        return settings

    def check_storage(self) -> None:
        """Fail loudly when the storage settings cannot work, naming what to set."""
        if self.storage != "s3":
            return
        if not self.s3_bucket:
            raise ConfigError("VIDSTREAM_STORAGE=s3 needs S3_BUCKET")
        if not _BUCKET_RE.match(self.s3_bucket):
            raise ConfigError(f"S3_BUCKET={self.s3_bucket!r} is not a valid bucket name")
        if bool(self.s3_access_key_id) != bool(self.s3_secret_access_key):
            raise ConfigError("set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither")
        if self.s3_endpoint_url and not self.s3_access_key_id:
            raise ConfigError(
                "S3_ENDPOINT_URL is set (R2, MinIO): AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "are needed too"
            )

    @property
    def s3_region_name(self) -> str:
        return self.s3_region or ("auto" if self.s3_endpoint_url else "us-east-1")

    @property
    def s3_addressing(self) -> str:
        return self.s3_addressing_style or ("path" if self.s3_endpoint_url else "auto")

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def gateway_url(self) -> str:
        """The gateway's base URL as clients reach it."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{_client_host(self.gateway_host)}:{self.gateway_port}"

    @property
    def ws_url(self) -> str:
        """The notifier's WebSocket URL as clients reach it."""
        if self.public_ws_url:
            return self.public_ws_url
        return f"ws://{_client_host(self.notifier_host)}:{self.notifier_port}/v1/ws"


_X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)


def _client_host(host: str) -> str:
    # A server bound to every interface is reached through loopback from this machine; anything
    # else needs PUBLIC_URL / PUBLIC_WS_URL set explicitly.
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class _Reader:
    """Typed access to environment variables, naming the variable in every error."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def _raw(self, name: str) -> str | None:
        value = self.env.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def text(self, name: str, default: str) -> str:
        value = self._raw(name)
        return default if value is None else value

    def number(
        self,
        name: str,
        default: T,
        kind: Callable[[str], T],
        low: float | None = None,
        high: float | None = None,
    ) -> T:
        value = self._raw(name)
        if value is None:
            return default
        try:
            parsed = kind(value)
        except ValueError:
            raise ConfigError(f"{name} must be a {kind.__name__}, got {value!r}") from None
        number = float(parsed)  # type: ignore[arg-type]
        if not math.isfinite(number):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
        if (low is not None and number < low) or (high is not None and number > high):
            bounds = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
            raise ConfigError(f"{name} must be {bounds}, got {value!r}")
        return parsed

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self._raw(name)
        if value is None:
            return default
        if value.lower() not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
        return value.lower()

    def csv(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self._raw(name)
        if value is None:
            return default
        return tuple(part.strip() for part in value.split(",") if part.strip())

    def url(self, name: str, schemes: tuple[str, ...]) -> str:
        value = self._raw(name)
        if value is None:
            return ""
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.netloc:
            raise ConfigError(f"{name} must be a {' or '.join(schemes)} URL, got {value!r}")
        return value
