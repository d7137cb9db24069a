"""Settings from environment variables: typed defaults, loud errors naming the variable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vidstream.core.errors import ConfigError
from vidstream.core.settings import Settings, Spec, settings_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_defaults() -> None:
    """With nothing set, vidstream runs locally on its documented defaults."""
    s = Settings.from_env({})
    assert s == Settings()
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.redis_prefix == "vs"
    assert s.data_dir == Path("data")
    assert (s.gateway_port, s.notifier_port) == (8080, 8765)
    assert s.cors_origins == ()  # no browser origin is let in until named
    assert s.max_upload_bytes == 4 * 1024**3
    assert s.job_retention_s == 7 * 24 * 3600 and s.failed_job_retention_s == 0
    assert (s.concurrency, s.ffmpeg, s.x264_preset, s.x264_crf) == (1, "auto", "veryfast", 21)
    assert (s.log_level, s.log_format) == ("info", "auto")
    assert s.gateway_url == "http://127.0.0.1:8080"
    assert s.ws_url == "ws://127.0.0.1:8765/v1/ws"


def test_blank_values_mean_the_default() -> None:
    """A variable set to an empty or blank string is treated as unset."""
    assert (
        Settings.from_env({"GATEWAY_PORT": "", "LOG_LEVEL": "  ", "PUBLIC_URL": ""}) == Settings()
    )


def test_values_are_parsed_and_typed() -> None:
    """Every kind of value is read: numbers, choices (any case), lists, paths, URLs."""
    s = Settings.from_env(
        {
            "REDIS_URL": "rediss://cache.example:6380/2",
            "REDIS_PREFIX": "prod.v2_a-b",
            "REDIS_TIMEOUT_S": " 2.5 ",
            "VIDSTREAM_DATA_DIR": "/srv/vidstream",
            "GATEWAY_PORT": "0",
            "CORS_ORIGINS": "https://a.example, https://b.example,,",
            "CONCURRENCY": "64",
            "X264_PRESET": "Medium",
            "X264_CRF": "0",
            "LOG_LEVEL": "DEBUG",
            "LOG_FORMAT": "json",
            "MAX_DURATION_S": "600",
            "FFMPEG_BINARY": "/usr/bin/ffmpeg",
            "SECRET_KEY": "s3cret",
        }
    )
    assert s.redis_url == "rediss://cache.example:6380/2"
    assert s.redis_prefix == "prod.v2_a-b"
    assert s.redis_timeout_s == 2.5
    assert s.data_dir == Path("/srv/vidstream")
    assert s.gateway_port == 0 and isinstance(s.gateway_port, int)
    assert s.cors_origins == ("https://a.example", "https://b.example")
    assert s.concurrency == 64
    assert (s.x264_preset, s.x264_crf) == ("medium", 0)
    assert (s.log_level, s.log_format) == ("debug", "json")
    assert s.max_duration_s == 600.0 and isinstance(s.max_duration_s, float)
    assert s.ffmpeg == "/usr/bin/ffmpeg" and s.secret_key == "s3cret"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("GATEWAY_PORT", "http", "must be a int"),
        ("GATEWAY_PORT", "8080.0", "must be a int"),
        ("CONCURRENCY", "two", "must be a int"),
        ("MAX_DURATION_S", "1h", "must be a float"),
        ("REDIS_TIMEOUT_S", "fast", "must be a float"),
    ],
)
def test_a_malformed_number_names_the_variable(name: str, value: str, message: str) -> None:
    """A number that does not parse stops start-up, naming the variable and the value."""
    with pytest.raises(ConfigError, match=name) as err:
        Settings.from_env({name: value})
    assert message in str(err.value) and repr(value) in str(err.value)


@pytest.mark.parametrize(
    ("name", "value", "bounds"),
    [
        ("GATEWAY_PORT", "65536", "between 0 and 65535"),
        ("NOTIFIER_PORT", "-1", "between 0 and 65535"),
        ("CONCURRENCY", "0", "between 1 and 64"),
        ("CONCURRENCY", "65", "between 1 and 64"),
        ("X264_CRF", "52", "between 0 and 51"),
        ("JOB_RETENTION_S", "0", "at least 1"),
        ("MAX_UPLOAD_BYTES", "0", "at least 1"),
        ("REDIS_TIMEOUT_S", "0.05", "at least 0.1"),
        ("SHUTDOWN_GRACE_S", "-1", "at least 0"),
        ("WHISPER_THREADS", "257", "between 1 and 256"),
    ],
)
def test_an_out_of_range_number_names_the_variable(name: str, value: str, bounds: str) -> None:
    """A number outside its range stops start-up and says what range is allowed."""
    with pytest.raises(ConfigError, match=name) as err:
        Settings.from_env({name: value})
    assert bounds in str(err.value)


@pytest.mark.parametrize("name", ["REDIS_TIMEOUT_S", "SHUTDOWN_GRACE_S", "PROBE_TIMEOUT_S"])
def test_nan_is_refused(name: str) -> None:
    """A timeout of "nan" stops start-up instead of making every wait undefined."""
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: "nan"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X264_PRESET", "turbo"),
        ("LOG_LEVEL", "verbose"),
        ("LOG_FORMAT", "xml"),
        ("VIDSTREAM_STORAGE", "gcs"),
    ],
)
def test_a_bad_choice_names_the_variable_and_the_choices(name: str, value: str) -> None:
    """An unknown choice stops start-up and lists the accepted values."""
    with pytest.raises(ConfigError, match=name) as err:
        Settings.from_env({name: value})
    assert "one of" in str(err.value) and repr(value) in str(err.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PUBLIC_URL", "ftp://files.example"),
        ("PUBLIC_URL", "example.com"),
        ("PUBLIC_URL", "http://"),
        ("PUBLIC_URL", "ws://gateway.example"),
        ("PUBLIC_WS_URL", "http://ws.example/v1/ws"),
        ("PUBLIC_WS_URL", "ws.example"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("REDIS_URL", "127.0.0.1:6379"),
    ],
)
def test_a_bad_url_names_the_variable(name: str, value: str) -> None:
    """A URL with the wrong scheme (or none) stops start-up, naming the variable."""
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize("url", ["redis://r:6379/1", "rediss://r:6380", "unix:///run/redis.sock"])
def test_redis_url_schemes(url: str) -> None:
    """TCP, TLS and Unix-socket Redis URLs are all accepted."""
    assert Settings.from_env({"REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize("prefix", ["has space", "a:b", "x" * 33, "{tag}", "dir/prefix", "ü"])
def test_a_bad_redis_prefix_names_the_variable(prefix: str) -> None:
    """A key prefix that could break key names or hash tags stops start-up."""
    with pytest.raises(ConfigError, match="REDIS_PREFIX"):
        Settings.from_env({"REDIS_PREFIX": prefix})


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:9000"),
        ("::", "http://127.0.0.1:9000"),
        ("::1", "http://[::1]:9000"),
        ("fd00::5", "http://[fd00::5]:9000"),
        ("10.1.2.3", "http://10.1.2.3:9000"),
        ("media.internal", "http://media.internal:9000"),
    ],
)
def test_gateway_url_from_host_and_port(host: str, url: str) -> None:
    """Links handed to clients point at an address they can reach, IPv6 in brackets."""
    s = Settings.from_env({"GATEWAY_HOST": host, "GATEWAY_PORT": "9000"})
    assert s.gateway_url == url


def test_ws_url_from_host_and_port() -> None:
    """The WebSocket link follows the notifier's host and port, with the same rules."""
    assert Settings(notifier_host="0.0.0.0", notifier_port=1).ws_url == "ws://127.0.0.1:1/v1/ws"
    assert Settings(notifier_host="::1", notifier_port=2).ws_url == "ws://[::1]:2/v1/ws"


def test_public_urls_override_the_derived_ones() -> None:
    """Behind a proxy the configured public URLs are used as given (minus a trailing slash)."""
    s = Settings.from_env(
        {
            "GATEWAY_HOST": "0.0.0.0",
            "PUBLIC_URL": "https://video.example/api/",
            "PUBLIC_WS_URL": "wss://live.example/v1/ws",
        }
    )
    assert s.gateway_url == "https://video.example/api"
    assert s.ws_url == "wss://live.example/v1/ws"


def test_settings_are_frozen() -> None:
    """Settings cannot be changed after start-up; replace() makes a changed copy."""
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.gateway_port = 1  # type: ignore[misc]
    changed = s.replace(gateway_port=1)
    assert changed.gateway_port == 1 and s.gateway_port == 8080


R2 = {
    "VIDSTREAM_STORAGE": "s3",
    "S3_ENDPOINT_URL": "https://acct.r2.cloudflarestorage.com",
    "S3_BUCKET": "videos",
    "AWS_ACCESS_KEY_ID": "id",
    "AWS_SECRET_ACCESS_KEY": "secret",
}


def test_r2_with_five_variables() -> None:
    """Five variables point vidstream at R2: region auto, path-style addressing, SigV4."""
    settings = Settings.from_env(R2)
    assert settings.storage == "s3"
    assert (settings.s3_region_name, settings.s3_addressing) == ("auto", "path")
    assert "secret" not in repr(settings)  # credentials never reach a log line


def test_aws_defaults() -> None:
    """Without an endpoint (AWS), the region defaults to us-east-1 and addressing to auto."""
    settings = Settings.from_env({"VIDSTREAM_STORAGE": "s3", "S3_BUCKET": "videos"})
    assert (settings.s3_region_name, settings.s3_addressing) == ("us-east-1", "auto")


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"S3_BUCKET": ""}, "S3_BUCKET"),
        ({"S3_BUCKET": "Bad_Bucket"}, "S3_BUCKET"),
        ({"AWS_SECRET_ACCESS_KEY": ""}, "AWS_SECRET_ACCESS_KEY"),
        ({"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}, "AWS_ACCESS_KEY_ID"),
        ({"S3_ENDPOINT_URL": "ftp://x"}, "S3_ENDPOINT_URL"),
        ({"S3_ADDRESSING_STYLE": "sideways"}, "S3_ADDRESSING_STYLE"),
        ({"S3_MULTIPART_THRESHOLD": "1024"}, "S3_MULTIPART_THRESHOLD"),
        ({"S3_PUBLIC_URL": "cdn.example.com"}, "S3_PUBLIC_URL"),
    ],
)
def test_wrong_s3_settings_fail_at_start_naming_the_setting(
    changes: dict[str, str], needle: str
) -> None:
    """A missing or malformed storage setting stops start-up with a message naming it."""
    with pytest.raises(ConfigError) as err:
        Settings.from_env({**R2, **changes})
    assert needle in str(err.value)


def test_readme_table_is_the_declared_one() -> None:
    """The README's configuration table lists exactly the declared settings and defaults."""
    start, end = "<!-- settings-table:start -->", "<!-- settings-table:end -->"
    readme = README.read_text()
    assert start in readme and end in readme, f"README.md needs {start} and {end}"
    table = readme.split(start, 1)[1].split(end, 1)[0].strip()
    assert table == settings_table(), (
        "README.md is out of date: run `python -m vidstream.core.settings` and paste its output "
        "between the settings-table markers"
    )


def test_settings_built_in_code_are_validated() -> None:
    """Settings built directly, as tests and benches do, are checked like the environment."""
    with pytest.raises(ConfigError, match="VISIBILITY_TIMEOUT_S") as err:
        Settings(visibility_timeout_s=0)
    assert "between 1 and 3600" in str(err.value) and "got 0" in str(err.value)
    assert Settings(log_level="DEBUG").log_level == "debug"
    with pytest.raises(ConfigError, match="VIDSTREAM_STORAGE=s3 needs S3_BUCKET"):
        Settings().replace(storage="s3")


def test_every_setting_is_declared_once() -> None:
    """Every setting has its own variable and a line of help, so the README row is complete."""
    specs = [f.metadata.get("setting") for f in dataclasses.fields(Settings)]
    assert all(isinstance(spec, Spec) for spec in specs)
    envs = [spec.env for spec in specs if isinstance(spec, Spec)]
    assert all(env and env == env.upper() for env in envs)
    assert len(envs) == len(set(envs)), "two settings read the same variable"
    for spec in specs:
        assert isinstance(spec, Spec) and spec.help and "|" not in spec.help, spec
