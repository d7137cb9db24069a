"""Object keys and file names built from user input, and the HMAC-signed URLs and tokens."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

from vidstream.core.errors import InvalidKey
from vidstream.core.settings import Settings
from vidstream.core.signing import Signer, load_secret
from vidstream.storage.names import (
    MAX_KEY_LENGTH,
    check_key,
    check_source_key,
    new_upload_key,
    rendered_key,
    safe_filename,
    transcript_key,
)

# -- file names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("holiday.mp4", "holiday.mp4"),
        ("My Video (final).mov", "My Video (final).mov"),
        ("../../etc/passwd", "passwd"),
        ("/abs/path/clip.mp4", "clip.mp4"),
        ("C:\\Users\\me\\Videos\\clip.mp4", "clip.mp4"),
        ("..", "upload"),
        ("...", "upload"),
        ("dir/..", "upload"),
        ("a\x00b\x1f\x7fc.mp4", "abc.mp4"),
        ("line\nbreak.mp4", "linebreak.mp4"),
        ("vid\u00e9o.mp4", "vid_o.mp4"),
        ("日本語の動画.mp4", "_.mp4"),
        ("\uff56\uff49\uff44.mp4", "vid.mp4"),  # full-width letters fold to ASCII
        ('a<b>c:"d|e?*.mp4', "a_b_c_d_e_.mp4"),
        ("  .hidden.mp4. ", "hidden.mp4"),
        ("", "upload"),
        ("   ", "upload"),
        ("/", "upload"),
    ],
)
def test_safe_filename(name: str, safe: str) -> None:
    """Uploaded names keep their readable part but lose directories and odd characters."""
    assert safe_filename(name) == safe


def test_safe_filename_is_plain_ascii() -> None:
    """Whatever is uploaded, the stored name is short, printable ASCII with no separators."""
    for name in ("\u202eevil\u202dfdp.exe", "😀😀.mp4", "a/b\\c", "%2e%2e%2f.mp4", "x" * 500):
        safe = safe_filename(name)
        assert re.fullmatch(r"[A-Za-z0-9._()\- ]{1,100}", safe), (name, safe)
        assert safe not in (".", "..")


def test_long_names_keep_their_extension() -> None:
    """A very long name is cut to 100 characters but still ends in its extension."""
    safe = safe_filename("a" * 300 + ".mp4")
    assert len(safe) == 100 and safe.endswith("aaa.mp4")
    long_ext = safe_filename("clip." + "x" * 200)  # not an extension worth keeping
    assert len(long_ext) == 100 and long_ext.startswith("clip.")


def test_empty_names_use_the_default() -> None:
    """A name with nothing usable left falls back to the given default."""
    assert safe_filename("../..", default="source.mp4") == "source.mp4"
    assert safe_filename("\x00\x01", default="x") == "x"


# -- keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "",
        "x" * (MAX_KEY_LENGTH + 1),
        "/etc/passwd",
        "uploads/../jobs/x/transcript.json",
        ".partial/abc",
        "../secret",
        "uploads/..",
        "uploads/./a.mp4",
        "uploads//a.mp4",
        "uploads/a/",
        "uploads\\a.mp4",
        "uploads/a\x00.mp4",
        "uploads/a\n.mp4",
        "uploads/\u200ba.mp4",  # zero-width space: a format (C) character
    ],
)
def test_bad_keys_are_rejected(key: str) -> None:
    """Keys that could leave their prefix or hide characters are refused as invalid_key."""
    with pytest.raises(InvalidKey) as err:
        check_key(key)
    assert err.value.code == "invalid_key"
    with pytest.raises(InvalidKey) as err:
        check_source_key(key)
    assert err.value.code == "invalid_key"


@pytest.mark.parametrize(
    "key", ["uploads/abc/clip.mp4", "jobs/j1/transcript.srt", "a", "uploads/x/vidéo.mp4"]
)
def test_good_keys_pass(key: str) -> None:
    """Well-formed relative keys are returned unchanged."""
    assert check_key(key) == key


def test_the_longest_key_passes() -> None:
    """A key of exactly the maximum length, in segments a file system takes, is accepted; one
    segment over 255 bytes is not (no disk can name it)."""
    key = "uploads/" + "x" * 255 + "/"
    key += "y" * (MAX_KEY_LENGTH - len(key))
    assert len(key) == MAX_KEY_LENGTH and check_source_key(key) == key
    with pytest.raises(InvalidKey, match="255 bytes"):
        check_key("uploads/" + "é" * 128)


@pytest.mark.parametrize(
    "key", ["jobs/j1/transcript.json", "rendered/j1.mp4", "uploadsx/a.mp4", "Uploads/a.mp4"]
)
def test_sources_come_only_from_uploads(key: str) -> None:
    """A job cannot take another job's outputs (or anything outside uploads/) as its source."""
    check_key(key)
    with pytest.raises(InvalidKey, match="uploads/") as err:
        check_source_key(key)
    assert err.value.code == "invalid_key"


def test_new_upload_key_shape() -> None:
    """Each upload gets its own random folder under uploads/ and a name vidstream chose: no
    client name or extension ever decides how the file is read."""
    key = new_upload_key()
    assert re.fullmatch(r"uploads/[0-9a-f]{24}/source", key), key
    assert check_source_key(key) == key
    assert new_upload_key() != new_upload_key()


def test_rendered_key_format() -> None:
    """Rendered videos are named after the job and the UTC time they were made."""
    assert rendered_key("job1", "r1", now=0) == "rendered/job1-19700101T000000Z-r1.mp4"
    assert (
        rendered_key("job1", "r1", now=1_735_689_599.9) == "rendered/job1-20241231T235959Z-r1.mp4"
    )
    assert re.fullmatch(r"rendered/j-\d{8}T\d{6}Z-r\.mp4", rendered_key("j", "r"))
    assert rendered_key("j", "r", 0, "-poster", "jpg") == "rendered/j-19700101T000000Z-r-poster.jpg"
    assert transcript_key("j", "srt", "r") == "jobs/j/r/transcript.srt"


# -- signatures --------------------------------------------------------------------------------

BASE = "http://gw.example:8080"


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def key_of(url: str) -> str:
    return unquote(urlsplit(url).path.removeprefix("/v1/objects/"))


def test_ws_tokens() -> None:
    """A WebSocket token opens exactly its own tenant's job, only with the secret that made it,
    and only until it expires."""
    signer = Signer(b"secret")
    created, ttl = 1_000_000.0, 3600
    token = signer.ws_token("acme", "job-a", created, ttl, now=created)
    assert signer.check_ws_token("acme", "job-a", token, now=created)
    assert not signer.check_ws_token("acme", "job-b", token, now=created)
    assert not signer.check_ws_token("other", "job-a", token, now=created)
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert not signer.check_ws_token("acme", "job-a", tampered, now=created)
    assert not signer.check_ws_token("acme", "job-a", "", now=created)
    assert not signer.check_ws_token("acme", "job-a", "é.é", now=created)
    assert not Signer(b"other").check_ws_token("acme", "job-a", token, now=created)
    # Forged expiry: the MAC covers it.
    expires, mac = token.split(".")
    assert not signer.check_ws_token("acme", "job-a", f"{int(expires) + 9999}.{mac}", now=created)
    # Stateless and stable: the same job gets the same token within a window.
    assert signer.ws_token("acme", "job-a", created, ttl, now=created + 60) == token
    # It expires; a request later in the job's life gets a newer token, valid ttl/2 at least.
    assert not signer.check_ws_token("acme", "job-a", token, now=created + ttl + 1)
    later = signer.ws_token("acme", "job-a", created, ttl, now=created + ttl)
    assert later != token and signer.check_ws_token("acme", "job-a", later, now=created + ttl * 1.4)


def test_object_url_round_trip() -> None:
    """A signed download link works for its method and key until it expires."""
    signer = Signer(b"secret")
    expires = int(time.time()) + 60
    url = signer.object_url(BASE, "GET", "jobs/j1/my clip.srt", expires, filename="my clip.srt")
    assert url.startswith(f"{BASE}/v1/objects/jobs/j1/my%20clip.srt?")
    query = query_of(url)
    assert key_of(url) == "jobs/j1/my clip.srt"
    assert query["expires"] == str(expires) and query["filename"] == "my clip.srt"
    assert signer.check_object_url("GET", key_of(url), query)
    assert not signer.check_object_url("PUT", key_of(url), query)
    assert not Signer(b"other").check_object_url("GET", key_of(url), query)


def test_object_url_rejects_a_tampered_key() -> None:
    """A link for one object cannot be pointed at another."""
    signer = Signer(b"secret")
    url = signer.object_url(BASE, "GET", "jobs/j1/transcript.srt", int(time.time()) + 60)
    assert not signer.check_object_url("GET", "jobs/j2/transcript.srt", query_of(url))


@pytest.mark.parametrize(
    "change",
    [
        {"max_size": "999999999"},
        {"expires": "9999999999"},
        {"sig": "AAAA"},
        {"extra": "1"},
        {"sig": ""},
    ],
)
def test_object_url_rejects_tampered_params(change: dict[str, str]) -> None:
    """Changing, adding or dropping any signed parameter voids the link."""
    signer = Signer(b"secret")
    url = signer.object_url(BASE, "PUT", "uploads/a/b.mp4", int(time.time()) + 60, max_size=100)
    query = query_of(url)
    assert signer.check_object_url("PUT", "uploads/a/b.mp4", query)
    assert not signer.check_object_url("PUT", "uploads/a/b.mp4", {**query, **change})
    dropped = {k: v for k, v in query.items() if k != "max_size"}
    assert not signer.check_object_url("PUT", "uploads/a/b.mp4", dropped)


def test_object_url_expires() -> None:
    """A link used after its expiry time is refused even with a valid signature."""
    signer = Signer(b"secret")
    url = signer.object_url(BASE, "GET", "jobs/j1/t.json", int(time.time()) - 1)
    assert not signer.check_object_url("GET", "jobs/j1/t.json", query_of(url))


def test_object_url_without_expiry_is_refused() -> None:
    """A link with its expiry removed is refused, signature or not."""
    signer = Signer(b"secret")
    query = query_of(signer.object_url(BASE, "GET", "jobs/j1/t.json", int(time.time()) + 60))
    del query["expires"]
    assert not signer.check_object_url("GET", "jobs/j1/t.json", query)
    assert not signer.check_object_url("GET", "jobs/j1/t.json", {})


# -- the secret --------------------------------------------------------------------------------


def test_secret_key_setting_wins(tmp_path: Path) -> None:
    """A configured SECRET_KEY is used as is and nothing is written to disk."""
    settings = Settings(secret_key="configured", data_dir=tmp_path / "data")
    assert load_secret(settings) == b"configured"
    assert not (tmp_path / "data").exists()


def test_load_secret_creates_one_secret_and_keeps_it(tmp_path: Path) -> None:
    """Without SECRET_KEY a random secret is made once and reused by every later start."""
    settings = Settings(secret_key="", data_dir=tmp_path / "data")
    first = load_secret(settings)
    assert len(first) >= 32
    assert load_secret(settings) == first
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["secret"]
    assert (tmp_path / "data" / "secret").stat().st_mode & 0o077 == 0  # private to the owner
    assert load_secret(Settings(secret_key="", data_dir=tmp_path / "other")) != first


def test_load_secret_from_concurrent_threads(tmp_path: Path) -> None:
    """Processes starting together on one machine all end up with the same secret."""
    settings = Settings(secret_key="", data_dir=tmp_path / "data")
    workers = 16
    barrier = threading.Barrier(workers)

    def load() -> bytes:
        barrier.wait(timeout=10)
        return load_secret(settings)

    with ThreadPoolExecutor(workers) as pool:
        secrets = list(pool.map(lambda _: load(), range(workers)))
    assert len(set(secrets)) == 1 and secrets[0]
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["secret"]  # no leftovers
