"""The deployment files describe a stack vidstream accepts (no Docker engine, systemd or nginx
needed to check; each is used when it is there)."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from vidstream.core.settings import Settings, Spec, env_example

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
ROLES = {"gateway", "transcribe", "render", "notifier"}
UNIT = DEPLOY / "systemd" / "vidstream@.service"
TARGET = DEPLOY / "systemd" / "vidstream.target"
NOTIFIER_2 = DEPLOY / "systemd" / "notifier-2.env"
NGINX = DEPLOY / "nginx" / "vidstream.conf"
REDIS_CONF = DEPLOY / "redis" / "vidstream.conf"
ENV_EXAMPLE = DEPLOY / ".env.example"
DECLARED = [
    f.metadata["setting"].env
    for f in dataclasses.fields(Settings)
    if isinstance(f.metadata.get("setting"), Spec)
]
# Variables the deployment files set that are not vidstream settings: the Hugging Face hub's,
# MinIO's (compose) and the `vidstream submit` client's.
OTHERS = {"HF_HUB_OFFLINE", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "VIDSTREAM_API_KEY"}


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
    """The R2 example in deploy/README.md, as written, is a valid R2 configuration."""
    section = (DEPLOY / "README.md").read_text().split("## Cloudflare R2", 1)[1]
    example = section.split("```sh\n", 1)[1].split("```", 1)[0]
    settings = Settings.from_env(env_lines(example))
    assert settings.storage == "s3"
    assert settings.s3_endpoint_url.endswith(".r2.cloudflarestorage.com")
    assert (settings.s3_region_name, settings.s3_addressing) == ("auto", "path")


def env_lines(text: str) -> dict[str, str]:
    """NAME=value lines (an env file, a systemd EnvironmentFile), comments and blanks skipped."""
    env = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value
    return env


# -- .env.example -------------------------------------------------------------------------------


def test_env_example_is_every_setting_generated_from_the_declarations() -> None:
    """deploy/.env.example is a header comment, then `python -m vidstream.core.settings --env`."""
    header, _, body = ENV_EXAMPLE.read_text().partition("\n\n")
    assert all(line.startswith("#") for line in header.splitlines()), "a header of comments"
    assert body == env_example() + "\n", (
        "deploy/.env.example is out of date: keep its header and regenerate the rest with "
        "`{ sed '/^$/q' deploy/.env.example; .venv/bin/python -m vidstream.core.settings --env; } "
        "> /tmp/env.example && mv /tmp/env.example deploy/.env.example`"
    )


def test_env_example_holds_every_default() -> None:
    """Read as written, by Python or sourced by a shell, .env.example is vidstream's defaults."""
    env = env_lines(env_example())
    assert list(env) == DECLARED
    assert Settings.from_env(env) == Settings()
    # What the shell makes of it (`set -a; . file`, as deploy/README.md's `vs` helper does).
    sourced = subprocess.run(
        ["/bin/sh", "-c", 'set -a; . "$1"; exec env', "sh", str(ENV_EXAMPLE)],
        env={"PATH": os.defpath}, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    shell_env = {k: v for k, v in env_lines(sourced).items() if k in DECLARED}
    assert shell_env == env


def test_env_example_leaves_secrets_and_derived_defaults_empty() -> None:
    """Secrets are never filled in, and derived defaults stay empty with a comment saying why."""
    blocks = {block.rsplit("\n", 1)[1]: block for block in env_example().split("\n\n")}
    assert "SECRET_KEY=" in blocks and "AWS_SECRET_ACCESS_KEY=" in blocks
    assert "# secret" in blocks["SECRET_KEY="] and "generated into" in blocks["SECRET_KEY="]
    assert "# default: derived" in blocks["PUBLIC_URL="]
    assert "MAX_UPLOAD_BYTES=4294967296" in blocks


def test_deploy_files_set_only_vidstream_settings() -> None:
    """Every NAME= in .env.example, the units, the instance files, nginx's and Redis's notes and
    deploy/README.md is a declared setting, so a typo never silently keeps a default."""
    files = [ENV_EXAMPLE, DEPLOY / "README.md", NGINX, REDIS_CONF, *(DEPLOY / "systemd").iterdir()]
    names: dict[str, set[str]] = {}
    for path in files:
        for name in re.findall(r"(?<![A-Za-z0-9_$])([A-Z][A-Z0-9_]+)=", path.read_text()):
            names.setdefault(name, set()).add(path.name)
    unknown = {name: where for name, where in names.items() if name not in {*DECLARED, *OTHERS}}
    assert not unknown, f"not vidstream settings: {unknown}"
    assert {"NOTIFIER_PORT", "HF_HUB_OFFLINE", "PUBLIC_WS_URL"} <= set(names)


# -- systemd ------------------------------------------------------------------------------------


def unit(path: Path = UNIT) -> dict[str, list[str]]:
    """Each key of a unit file with its values, in order (sections merged: no key is in two)."""
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_unit_runs_each_instance_as_vidstream_with_its_settings() -> None:
    """An instance runs as `vidstream`, with vidstream.env and its own optional file on top,
    restarts when it fails, hardened, as part of vidstream.target."""
    u = unit()
    assert u["User"] == ["vidstream"]
    # Later files win: the instance's own overrides the shared one; "-" makes it optional.
    assert u["EnvironmentFile"] == ["/etc/vidstream/vidstream.env", "-/etc/vidstream/%i.env"]
    assert u["Environment"] == ["HF_HUB_OFFLINE=1"]
    assert u["Restart"] == ["on-failure"] and u["RestartSec"]
    assert (u["KillSignal"], u["KillMode"]) == (["SIGTERM"], ["mixed"])
    for key, value in {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
        "ProtectHome": "yes", "ReadWritePaths": "/var/lib/vidstream",
    }.items():  # fmt: skip
        assert u[key] == [value], key
    assert u["PartOf"] == ["vidstream.target"] and u["WantedBy"] == ["vidstream.target"]
    assert unit(TARGET)["WantedBy"] == ["multi-user.target"]


def test_unit_waits_longer_than_the_shutdown_grace_period() -> None:
    """systemd gives a stopping instance its grace period for running jobs, then up to 15 s to
    cancel them and 7 s to stop its Whisper servers, before it kills anything."""
    (timeout,) = unit()["TimeoutStopSec"]
    assert float(timeout.removesuffix("s")) > Settings().shutdown_grace_s + 15 + 7


def systemd_exec_argv(line: str, instance: str, env: dict[str, str]) -> list[str]:
    """ExecStart= as systemd runs it: specifiers (%% and %i) at load, split into words with
    quotes removed, then $$ and ${NAME} (and a lone $NAME word) replaced at exec."""
    assert "\\" not in line, "backslash escapes are not emulated here"

    def specifier(m: re.Match[str]) -> str:
        assert m.group(1) in ("%", "i"), f"specifier %{m.group(1)} is not emulated here"
        return "%" if m.group(1) == "%" else instance

    words = shlex.split(re.sub(r"%(.)", specifier, line))

    def variable(m: re.Match[str]) -> str:
        return "$" if m.group(0) == "$$" else env.get(m.group(1), "")

    argv = []
    for word in words:
        if re.fullmatch(r"\$[A-Za-z_][A-Za-z0-9_]*", word):
            argv += env.get(word[1:], "").split()
        else:
            argv.append(re.sub(r"\$\$|\$\{([^}]*)\}", variable, word))
    return argv


@pytest.mark.parametrize(
    ("instance", "role"),
    [("transcribe-1", "transcribe"), ("gateway-10", "gateway"), ("notifier-2", "notifier"),
     ("render-1", "render")],
)  # fmt: skip
def test_instance_name_gives_the_role(instance: str, role: str, tmp_path: Path) -> None:
    """`vidstream@transcribe-1` runs `vidstream transcribe`: the real shell runs the ExecStart
    that systemd makes of the unit, with vidstream replaced by a script echoing its arguments."""
    (exec_start,) = unit()["ExecStart"]
    argv = systemd_exec_argv(exec_start, instance, {"HOME": "/var/lib/vidstream"})
    binary = "/opt/vidstream/.venv/bin/vidstream"
    assert argv[0] == "/bin/sh" and binary in argv[2]
    fake = tmp_path / "vidstream"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    argv[2] = argv[2].replace(binary, str(fake))
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    assert done.stdout == f"{role}\n"


def test_a_second_notifier_gets_its_own_port() -> None:
    """notifier-1 keeps NOTIFIER_PORT's default and notifier-2's own file moves it; nginx's
    WebSocket upstream lists exactly those two ports."""
    shared = env_lines(ENV_EXAMPLE.read_text())
    first = Settings.from_env(shared)
    second = Settings.from_env({**shared, **env_lines(NOTIFIER_2.read_text())})
    assert (first.notifier_port, second.notifier_port) == (8765, 8766)
    assert (first.redis_url, first.secret_key) == (second.redis_url, second.secret_key)
    servers = upstream_servers(nginx(), "vidstream_notifier")
    assert servers == [f"127.0.0.1:{first.notifier_port}", f"127.0.0.1:{second.notifier_port}"]


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    """`systemd-analyze verify` finds nothing to say about an instance and the target."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    shutil.copy(UNIT, tmp_path / "vidstream@transcribe-1.service")
    shutil.copy(TARGET, tmp_path / "vidstream.target")
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "vidstream@transcribe-1.service",
         "vidstream.target"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    # Warnings about the files name them; other lines are about the machine it runs on.
    complaints = [line for line in done.stderr.splitlines() if "vidstream" in line]
    assert done.returncode == 0 and not complaints, done.stderr


# -- nginx --------------------------------------------------------------------------------------


Block = list[tuple[list[str], "Block | None"]]


def nginx(text: str | None = None) -> Block:
    """nginx's configuration as directives, each its words and its block (None for `;`)."""
    text = NGINX.read_text() if text is None else text
    tokens = re.findall(r'"[^"]*"|\'[^\']*\'|[{};]|[^\s{};]+', re.sub(r"#[^\n]*", "", text))
    stack: list[Block] = [[]]
    words: list[str] = []
    for token in tokens:
        if token == "{":
            block: Block = []
            stack[-1].append((words, block))
            stack.append(block)
            words = []
        elif token == "}":
            stack.pop()
        elif token == ";":
            stack[-1].append((words, None))
            words = []
        else:
            words.append(token.strip("\"'"))
    assert len(stack) == 1 and not words, "unbalanced braces"
    return stack[0]


def find(block: Block, *head: str) -> list[Block]:
    """The blocks of the directives that start with `head`."""
    return [body for words, body in block if tuple(words[: len(head)]) == head and body is not None]


def values(block: Block, name: str) -> list[list[str]]:
    return [words[1:] for words, body in block if words[0] == name and body is None]


def upstream_servers(conf: Block, name: str) -> list[str]:
    (upstream,) = find(conf, "upstream", name)
    return [args[0] for args in values(upstream, "server")]


def tls_server(conf: Block) -> Block:
    (server,) = [s for s in find(conf, "server") if ["443", "ssl", "http2"] in values(s, "listen")]
    return server


def size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    return int(text[:-1]) * units[text[-1].lower()] if text[-1].isalpha() else int(text)


def seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(text[:-1]) * units[text[-1]] if text[-1].isalpha() else float(text)


def test_nginx_takes_uploads_as_large_as_vidstream_and_streams_them() -> None:
    """client_max_body_size is MAX_UPLOAD_BYTES's default, and uploads are not spooled."""
    server = tls_server(nginx())
    (limit,) = values(server, "client_max_body_size")
    assert size(limit[0]) == Settings().max_upload_bytes
    assert values(server, "proxy_request_buffering") == [["off"]]


def test_nginx_sends_websockets_to_several_notifiers() -> None:
    """/v1/ws upgrades to a WebSocket, balanced over two notifiers, and may stay open long."""
    conf = nginx()
    (ws,) = find(tls_server(conf), "location", "=", "/v1/ws")
    (target,) = values(ws, "proxy_pass")
    name = target[0].removeprefix("http://")
    (upstream,) = find(conf, "upstream", name)
    assert len(values(upstream, "server")) >= 2
    assert values(upstream, "least_conn") or values(upstream, "ip_hash")
    headers = {args[0]: args[1] for args in values(ws, "proxy_set_header")}
    assert headers["Upgrade"] == "$http_upgrade"
    (connection,) = find(conf, "map", "$http_upgrade", headers["Connection"])
    assert ["default", "upgrade"] in [words for words, _ in connection]
    assert values(ws, "proxy_http_version") == [["1.1"]]
    assert seconds(values(ws, "proxy_read_timeout")[0][0]) >= 600


def test_nginx_sends_the_rest_to_the_gateway_with_proxy_headers() -> None:
    """/ and /v1/ reach the gateway; every proxied request carries the proxy headers and
    nginx's request id; plain HTTP redirects to HTTPS."""
    conf = nginx()
    server = tls_server(conf)
    (root,) = find(server, "location", "/")
    (target,) = values(root, "proxy_pass")
    gateway = Settings()
    upstream = target[0].removeprefix("http://")
    assert f"{gateway.gateway_host}:{gateway.gateway_port}" in upstream_servers(conf, upstream)
    for location in (root, *find(server, "location", "=", "/v1/ws")):
        headers = {args[0]: args[1] for args in values(location, "proxy_set_header")}
        assert headers["X-Request-Id"] == "$request_id"
        assert headers["Host"] == "$host"
        assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for"
        assert headers["X-Forwarded-Proto"] == "$scheme"
    assert all(v[0].startswith("/etc/letsencrypt/live/") for v in values(server, "ssl_certificate"))
    (plain,) = [s for s in find(conf, "server") if ["80"] in values(s, "listen")]
    (redirect,) = find(plain, "location", "/")
    assert values(redirect, "return") == [["301", "https://$host$request_uri"]]


TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")  # nginx's, under /var otherwise


def test_nginx_accepts_the_site(tmp_path: Path) -> None:
    """`nginx -t` accepts the site inside an http block, with a throwaway certificate."""
    if shutil.which("nginx") is None or shutil.which("openssl") is None:
        pytest.skip("nginx or openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
         "-days", "1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    site = NGINX.read_text()
    site = re.sub(r"/etc/letsencrypt/live/[^;]*/fullchain\.pem", str(cert), site)
    site = re.sub(r"/etc/letsencrypt/live/[^;]*/privkey\.pem", str(key), site)
    site = site.replace("/var/log/nginx/", f"{tmp_path}/")
    (tmp_path / "site.conf").write_text(site)
    temp = " ".join(f"{kind}_temp_path {tmp_path}/{kind};" for kind in TEMP_PATHS)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{ access_log off; {temp} include {tmp_path}/site.conf; }}\n"
    )
    done = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
         "-e", str(tmp_path / "error.log")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


# -- Redis --------------------------------------------------------------------------------------


def test_redis_config_keeps_every_job() -> None:
    """AOF on with an fsync a second, loopback only, and never an eviction."""
    conf = {}
    for line in REDIS_CONF.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition(" ")
            conf[name] = value.strip()
    assert (conf["appendonly"], conf["appendfsync"]) == ("yes", "everysec")
    assert conf["maxmemory-policy"] == "noeviction" and conf["maxmemory"]
    assert {a.lstrip("-") for a in conf["bind"].split()} <= {"127.0.0.1", "::1"}


def test_redis_starts_with_the_config(tmp_path: Path) -> None:
    """redis-server accepts the file and runs with what it says (on a socket of the test's)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    sock = tmp_path / "redis.sock"
    server = subprocess.Popen(
        ["redis-server", str(REDIS_CONF), "--port", "0", "--unixsocket", str(sock),
         "--dir", str(tmp_path), "--daemonize", "no", "--logfile", ""],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        for line in server.stdout:  # the log, until Redis says it is ready
            if "ready to accept connections" in line.lower():
                break
        client = redis.Redis(unix_socket_path=str(sock), decode_responses=True)
        got = client.config_get("appendonly") | client.config_get("maxmemory-policy")
        assert got == {"appendonly": "yes", "maxmemory-policy": "noeviction"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        client.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stdout is not None:
            server.stdout.close()
