"""One frozen `Settings`, read from the environment once in `main()` and passed explicitly.

Each setting is declared once, with `declare.setting()`: variable, default, bounds, help (the
Redis ones in `settings_redis.RedisSettings`, which `Settings` extends).
Parsing (`from_env`), validation (`__post_init__`, so settings built in code are checked too)
and the README's table (`python -m vidstream.core.settings`) all follow from that declaration. A
malformed value fails loudly at start-up naming the variable, so a typo never becomes a job
failing an hour later.

To add a setting, declare a field with `setting()`, then paste `python -m vidstream.core.settings`
into README.md (tests/test_settings.py checks that it was) and regenerate deploy/.env.example
with `python -m vidstream.core.settings --env` (tests/test_deploy.py says how).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidstream.core.admission import Networks, networks
from vidstream.core.declare import (
    GiB,
    MiB,
    Spec,
    checked,
    declarations,
    env_file,
    parse,
    setting,
    table,
)
from vidstream.core.errors import ConfigError
from vidstream.core.settings_redis import RedisSettings

__all__ = ["GiB", "MiB", "Settings", "Spec", "env_example", "settings_table"]

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_X264_PRESETS: tuple[str, ...] = ("ultrafast", "superfast", "veryfast", "faster", "fast")
_X264_PRESETS += ("medium", "slow", "slower", "veryslow")
_HTTP, _WS = ("http", "https"), ("ws", "wss")
_LEVELS, _FORMATS = ("debug", "info", "warning", "error"), ("auto", "json", "console")


@dataclass(frozen=True, slots=True)
class Settings(RedisSettings):
    data_dir: Path = setting(  # noqa: RUF009 (setting() returns a dataclasses.field)
        "VIDSTREAM_DATA_DIR", Path("data"), "local storage, private Redis, worker temp dirs"
    )
    storage: str = setting(
        "VIDSTREAM_STORAGE", "local", "where files are kept", choices=("local", "s3")
    )
    secret_key: str = setting(
        "SECRET_KEY",
        "",
        "signs upload/download links and WebSocket tokens; set the same value on every machine",
        secret=True,
        shown_default="generated into `VIDSTREAM_DATA_DIR/secret`",
    )

    # Object storage (VIDSTREAM_STORAGE=s3): Cloudflare R2, AWS S3, MinIO.
    s3_endpoint_url: str = setting(
        "S3_ENDPOINT_URL", "", "R2 or MinIO endpoint", url=_HTTP, shown_default="(AWS)"
    )
    s3_bucket: str = setting("S3_BUCKET", "", "bucket (required with `VIDSTREAM_STORAGE=s3`)")
    s3_region: str = setting(
        "S3_REGION", "", "bucket region", shown_default="`auto` with an endpoint, else `us-east-1`"
    )
    s3_access_key_id: str = setting("AWS_ACCESS_KEY_ID", "", "access key; needed with an endpoint")
    s3_secret_access_key: str = setting(
        "AWS_SECRET_ACCESS_KEY", "", "secret key; needed with an endpoint", secret=True
    )
    s3_addressing_style: str = setting(
        "S3_ADDRESSING_STYLE",
        "",
        "bucket addressing",
        choices=("path", "virtual", "auto"),
        shown_default="`path` with an endpoint, else `auto`",
    )
    s3_public_url: str = setting(
        "S3_PUBLIC_URL", "", "public base URL for output links instead of presigned ones", url=_HTTP
    )
    # MinIO in docker compose is http://minio:9000 to workers, http://localhost:9000 to clients.
    s3_presign_endpoint_url: str = setting(
        "S3_PRESIGN_ENDPOINT_URL",
        "",
        "the endpoint as clients reach it, if workers use another",
        url=_HTTP,
        shown_default="`S3_ENDPOINT_URL`",
    )
    # An upload holds about (2.5 x concurrency + 1) parts in memory (botocore copies each part
    # it sends): 8 MiB x 2 is about 50 MB whatever the file's size (tests/test_large_files.py).
    s3_multipart_threshold: int = setting(
        "S3_MULTIPART_THRESHOLD", 8 * MiB, "part size", low=5 * MiB, high=5 * GiB
    )
    s3_multipart_concurrency: int = setting(
        "S3_MULTIPART_CONCURRENCY", 2, "parts in flight per upload", low=1, high=64
    )
    s3_timeout_s: float = setting(
        "S3_TIMEOUT_S", 30.0, "object storage connect and read timeout", low=1
    )

    gateway_host: str = setting("GATEWAY_HOST", "127.0.0.1", "REST API listen address")
    gateway_port: int = setting("GATEWAY_PORT", 8080, "REST API port", low=0, high=65535)
    public_url: str = setting(
        "PUBLIC_URL", "", "the gateway as clients reach it", url=_HTTP, shown_default="derived"
    )
    # None by default: a browser on another origin is let in only when named exactly.
    cors_origins: tuple[str, ...] = setting(
        "CORS_ORIGINS",
        (),
        "exact origins (`https://app.example.com`) allowed to call the API and the WebSocket "
        "from a browser, comma-separated",
        shown_default="none",
    )
    # Behind a proxy every connection comes from the proxy: without this, per-address limits
    # (connections, refused tokens) count every client together (vidstream/core/admission.py).
    trusted_proxies: tuple[str, ...] = setting(
        "TRUSTED_PROXIES",
        (),
        "addresses or networks (`127.0.0.1`, `10.0.0.0/8`) of reverse proxies whose "
        "`X-Forwarded-For` names the client, comma-separated; anyone else's is ignored",
        shown_default="none",
    )
    max_connections: int = setting(
        "MAX_CONNECTIONS",
        0,
        "connections the gateway, and each notifier, hold at most; past it a new one gets 503 "
        "(0: a third of the process's open-file limit)",
        low=0,
    )
    gateway_max_connections_per_ip: int = setting(
        "GATEWAY_MAX_CONNECTIONS_PER_IP",
        100,
        "connections one client address (an IPv6 /64) may hold to the gateway (429 beyond); "
        "a trusted proxy's are not counted, its clients' are limited at the proxy",
        low=1,
    )
    http_header_timeout_s: float = setting(
        "HTTP_HEADER_TIMEOUT_S",
        10.0,
        "how long a new connection may take to send its whole request head (408 and closed "
        "beyond), and a WebSocket to finish its handshake",
        low=0.1,
    )
    http_idle_timeout_s: float = setting(
        "HTTP_IDLE_TIMEOUT_S",
        30.0,
        "how long the gateway keeps an idle keep-alive connection for its next request (keep "
        "a proxy's own idle timeout below it)",
        low=0.1,
    )
    http_body_timeout_s: float = setting(
        "HTTP_BODY_TIMEOUT_S",
        60.0,
        "the longest gap in a request body (an upload ends with 408 `request_timeout` "
        "beyond); however long the whole body takes",
        low=0.1,
    )
    auth: str = setting(
        "VIDSTREAM_AUTH",
        "on",
        "`on`: every `/v1` call needs an API key; `off` only for a trusted network "
        "(`vidstream dev` turns it off while no key exists, and says so)",
        choices=("on", "off"),
    )
    api_keys: str = setting(
        "VIDSTREAM_API_KEYS",
        "",
        "API keys as `tenant:key` or `tenant:sha256:<hex>`, comma-separated (or use the keys file)",
        secret=True,
    )
    api_keys_file: str = setting(
        "VIDSTREAM_API_KEYS_FILE",
        "",
        "keys file written by `vidstream keys create`; holds hashes only",
        shown_default="`VIDSTREAM_DATA_DIR/api-keys.jsonl`",
    )
    ws_token_ttl_s: int = setting(
        "WS_TOKEN_TTL_S", 24 * 3600, "how long a job's WebSocket token is valid", low=60
    )
    rate_limit_per_min: int = setting(
        "RATE_LIMIT_PER_MIN", 600, "requests per minute per API key (0: no limit)", low=0
    )
    max_queue_depth: int = setting(
        "MAX_QUEUE_DEPTH",
        1000,
        "new jobs get 503 `overloaded` once this many wait for a worker, every stage counted "
        "(0: no limit)",
        low=0,
    )
    ws_ping_interval_s: float = setting(
        "WS_PING_INTERVAL_S",
        20.0,
        "the notifier pings each client this often and drops one that does not answer in time",
        low=1,
    )
    event_retention_s: int = setting(
        "EVENT_RETENTION_S",
        24 * 3600,
        "how long an ended job's event history is kept (never longer than the job itself); a "
        "client resuming from an older event gets a `reset`",
        low=60,
    )
    ws_max_connections_per_ip: int = setting(
        "WS_MAX_CONNECTIONS_PER_IP",
        50,
        "WebSocket connections one client address (an IPv6 /64) may hold, handshakes included",
        low=1,
    )
    metrics_port: int = setting(
        "METRICS_PORT",
        0,
        "`GET /metrics` on this port in processes without a gateway (0: off; the gateway and "
        "the notifier serve it on their own ports)",
        low=0,
        high=65535,
    )
    metrics_host: str = setting("METRICS_HOST", "127.0.0.1", "METRICS_PORT's listen address")
    notifier_host: str = setting("NOTIFIER_HOST", "127.0.0.1", "WebSocket server listen address")
    notifier_port: int = setting("NOTIFIER_PORT", 8765, "WebSocket server port", low=0, high=65535)
    public_ws_url: str = setting(
        "PUBLIC_WS_URL", "", "the notifier as clients reach it", url=_WS, shown_default="derived"
    )

    max_upload_bytes: int = setting("MAX_UPLOAD_BYTES", 4 * GiB, "largest accepted source", low=1)
    max_duration_s: float = setting(
        "MAX_DURATION_S", 4 * 3600.0, "longest accepted video (`too_long` beyond)", low=1
    )
    upload_url_ttl_s: int = setting("UPLOAD_URL_TTL_S", 900, "upload link lifetime", low=1)
    download_url_ttl_s: int = setting("DOWNLOAD_URL_TTL_S", 3600, "download link lifetime", low=1)
    job_retention_s: int = setting(
        "JOB_RETENTION_S",
        7 * 24 * 3600,
        "how long an ended job is kept: its record, events, logs and (unless `KEEP_OUTPUTS`) "
        "its source and outputs",
        low=1,
    )
    failed_job_retention_s: int = setting(
        "FAILED_JOB_RETENTION_S",
        0,
        "how long a failed job is kept (0: as long as `JOB_RETENTION_S`)",
        low=0,
    )
    keep_outputs: bool = setting(
        "KEEP_OUTPUTS",
        False,
        "leave sources and outputs in storage when a job is removed (then let a bucket "
        "lifecycle rule expire them)",
    )

    concurrency: int = setting(
        "CONCURRENCY", 1, "jobs per worker process (`--concurrency`)", low=1, high=64
    )
    ffmpeg: str = setting(
        "FFMPEG_BINARY", "auto", "`auto` = the pinned imageio-ffmpeg build (FFmpeg 9); or a path"
    )
    x264_preset: str = setting(
        "X264_PRESET", "veryfast", "burn-in encoder speed", choices=_X264_PRESETS
    )
    x264_crf: int = setting("X264_CRF", 21, "burn-in encoder quality", low=0, high=51)
    compose_segment_s: float = setting(
        "COMPOSE_SEGMENT_S",
        60.0,
        "a compose job at least twice this long renders in segments of about this length, "
        "which every render worker takes at once; 0 turns segments off",
        low=0,
    )
    max_tracks: int = setting("MAX_TRACKS", 32, "tracks a timeline may have", low=1, high=1000)
    max_clips: int = setting("MAX_CLIPS", 500, "clips a timeline may have", low=1, high=10_000)
    # Every clip's pictures are held for the whole render (`compose.memory`): 4 GiB lets a
    # hundred full-HD stills through (3.4 GB estimated), not eight 12000x12000 boxes (18 GB).
    compose_max_memory_bytes: int = setting(
        "COMPOSE_MAX_MEMORY_BYTES",
        4 * GiB,
        "memory a timeline's pictures may take in one FFmpeg, estimated from its clips' boxes "
        "(`too_much_memory` beyond); a render runs up to its concurrency of them at once",
        low=64 * MiB,
    )
    whisper_model: str = setting(
        "WHISPER_MODEL",
        "",
        "the default Whisper model: a name in `WHISPER_MODELS_DIR`, or a CTranslate2 model's "
        "folder",
        shown_default="bundled `tiny.en`",
    )
    whisper_models_dir: str = setting(
        "WHISPER_MODELS_DIR",
        "",
        "a folder of CTranslate2 Whisper models, one per folder named as jobs choose it "
        "(`model`); the bundled `tiny.en` is always offered too",
        shown_default="none",
    )
    # One thread per Whisper server: on 2-core machines two threads were slower than one and
    # used twice the CPU (bench/whisper_threads.py); scale with more servers instead.
    whisper_threads: int = setting(
        "WHISPER_THREADS",
        1,
        "CPU threads per Whisper server (one was fastest: `bench/whisper_threads.py`)",
        low=1,
        high=256,
    )
    whisper_beam_size: int = setting("WHISPER_BEAM_SIZE", 5, "beam search width", low=1)
    # Decoding never samples (the same input, the same words), so nothing rescues a decode that
    # loops: in a long silence tiny.en wrote "I'm going to take a look at how" 60 times over 18 s
    # and lost the sentence after it. Silero's voice detection (bundled with faster-whisper)
    # gives Whisper the speech alone, which also halved the time on a mostly silent clip.
    whisper_vad: bool = setting(
        "WHISPER_VAD",
        True,
        "transcribe only what voice detection calls speech (skips silences Whisper would fill "
        "with invented words)",
    )
    whisper_load_timeout_s: float = setting(
        "WHISPER_LOAD_TIMEOUT_S", 120.0, "how long a Whisper model may take to load", low=1
    )
    whisper_range_s: float = setting(
        "WHISPER_RANGE_S", 1200.0, "long sources are transcribed in pieces this long", low=1
    )
    # A long source's stages are cut into pieces that every worker of the role, on every host,
    # works at once (`kinds.fanout`); shorter ones run whole, on one worker.
    fanout_min_s: float = setting(
        "FANOUT_MIN_S",
        600.0,
        "a source at least this long is transcribed and rendered in pieces that all workers "
        "take at once; 0 turns fan-out off (a compose timeline's: COMPOSE_SEGMENT_S)",
        low=0,
    )
    piece_s: float = setting(
        "PIECE_S", 300.0, "about how long each piece of a fanned-out source is", low=5
    )
    probe_timeout_s: float = setting(
        "PROBE_TIMEOUT_S", 30.0, "how long probing a source may take", low=1
    )
    shutdown_grace_s: float = setting(
        "SHUTDOWN_GRACE_S", 30.0, "how long SIGTERM waits for running jobs", low=0
    )
    # 4096x2304: DCI 4K (4096x2160) and UHD (3840x2160) fit, either way up. 8K does not: one 8K
    # picture is 50 MB decoded, and x264 holds dozens of them in its lookahead.
    max_pixels: int = setting(
        "MAX_PIXELS",
        4096 * 2304,
        "largest picture (width x height) decoded; `too_large_frame` beyond",
        low=4,
        shown_default="9437184 (4096x2304)",
    )
    # FFmpeg renders at a fraction of real time and Whisper tiny.en at a tenth of it on one core;
    # raise this for a slower model or machine.
    media_timeout_factor: float = setting(
        "MEDIA_TIMEOUT_FACTOR",
        4.0,
        "an FFmpeg or Whisper run may take 60 s plus this many times the media's duration "
        "(`timeout` beyond)",
        low=0.1,
    )

    # A worker holds each job on a lease it renews every quarter of VISIBILITY_TIMEOUT_S, so a
    # job whose worker died is taken up by another once the timeout has passed.
    visibility_timeout_s: float = setting(
        "VISIBILITY_TIMEOUT_S",
        30.0,
        "how long a dead worker's job waits before another takes it",
        low=1,
        high=3600,
    )
    job_max_attempts: int = setting(
        "JOB_MAX_ATTEMPTS",
        3,
        "tries per stage, crashes included, before a job is dead-lettered",
        low=1,
        high=100,
    )
    retry_base_delay_s: float = setting(
        "RETRY_BASE_DELAY_S", 5.0, "first backoff; doubles per try, with jitter", low=0
    )
    retry_max_delay_s: float = setting("RETRY_MAX_DELAY_S", 300.0, "longest backoff", low=0)

    log_level: str = setting("LOG_LEVEL", "info", "least severe level logged", choices=_LEVELS)
    log_format: str = setting(
        "LOG_FORMAT", "auto", "`auto`: console on a terminal, else JSON", choices=_FORMATS
    )

    # Webhooks: a job's end POSTed, signed, to its webhook_url (docs/api.md, "Webhooks").
    webhook_allow_private: bool = setting(
        "WEBHOOK_ALLOW_PRIVATE",
        False,
        "let webhooks reach loopback, private and other non-public addresses (tests, private "
        "networks)",
    )
    webhook_timeout_s: float = setting(
        "WEBHOOK_TIMEOUT_S", 10.0, "how long one webhook attempt may take", low=0.1, high=300
    )
    webhook_max_age_s: float = setting(
        "WEBHOOK_MAX_AGE_S", 3600.0, "how long after a job ends its webhook is retried", low=0
    )
    webhook_retry_base_s: float = setting(
        "WEBHOOK_RETRY_BASE_S",
        5.0,
        "first webhook retry delay; doubles per try up to 10 min, with jitter",
        low=0.1,
    )

    def __post_init__(self) -> None:
        for f, kind, spec in _FIELDS:
            value = checked(spec, kind, f.default, getattr(self, f.name))
            object.__setattr__(self, f.name, value)  # frozen: normalising bypasses __setattr__
        try:
            networks(self.trusted_proxies)
        except ValueError as exc:
            raise ConfigError(f"TRUSTED_PROXIES: {exc}") from None
        if self.whisper_models_dir and not Path(self.whisper_models_dir).is_dir():
            raise ConfigError(f"WHISPER_MODELS_DIR: {self.whisper_models_dir!r} is no folder")
        self.check_redis()
        self.check_storage()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables; raise `ConfigError` naming a bad one."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f, kind, spec in _FIELDS:
            raw = env.get(spec.env, "").strip()
            if raw:  # blank means unset, so `FOO=` in an env file keeps the default
                values[f.name] = parse(spec, kind, raw)
        return cls(**values)

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

    @property
    def proxies(self) -> Networks:
        """TRUSTED_PROXIES as networks."""
        return networks(self.trusted_proxies)

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


def _client_host(host: str) -> str:
    # A server bound to every interface is reached through loopback from this machine; anything
    # else needs PUBLIC_URL / PUBLIC_WS_URL set explicitly.
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def settings_table() -> str:
    """The README's configuration table (markdown), one row per declared setting."""
    return table(_FIELDS)


def env_example() -> str:
    """Every declared setting as an env file (deploy/.env.example)."""
    return env_file(_FIELDS)


_FIELDS = declarations(Settings)

if __name__ == "__main__":
    cli = argparse.ArgumentParser(
        prog="python -m vidstream.core.settings",
        description="Print the README's settings table (the default) or every setting as an "
        "env file.",
    )
    cli.add_argument("--env", action="store_true", help="print deploy/.env.example's settings")
    print(env_example() if cli.parse_args().env else settings_table())
