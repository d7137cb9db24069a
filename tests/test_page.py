"""The page at `/`: a person uploads a video (or writes a timeline), follows it live, plays and
downloads the result.

The browser tests drive Debian's chromium (never a downloaded one) with Playwright against all
four roles running in the test's own process.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Page,
    Route,
    ViewportSize,
    async_playwright,
    expect,
)
from redis.asyncio import Redis
from yarl import URL

from tests.conftest import TERMINAL, fetch
from tests.faults import FAKE_FFMPEG, Faults
from tests.media import Clip, parse_cues, spoken_over_grey, words_of
from tests.test_render_kind import burnt_in
from vidstream.core.settings import Settings
from vidstream.http.page import routes as page_routes
from vidstream.runtime import Stack

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
KEY = "vs_test0000_key-of-tenant-acme-for-the-page-tests"
ROOT = Path(__file__).resolve().parents[1]
# Every run leaves the screenshot as an artifact (VIDSTREAM_ARTIFACTS, or .artifacts/); the
# README's copy changes only when asked: VIDSTREAM_UPDATE_SCREENSHOT=1.
ARTIFACTS = Path(os.environ.get("VIDSTREAM_ARTIFACTS") or ROOT / ".artifacts")
README_SCREENSHOT = ROOT / "docs" / "screenshot.png"
JOB_TIMEOUT_MS = 90_000

browser_test = pytest.mark.skipif(not shutil.which(CHROMIUM), reason="needs Debian's chromium")

# Every value each <progress> takes, recorded as the page sets it (the bar's `value` attribute
# follows the property), keyed by the bar's id or its stage.
RECORD_BARS = """() => {
  window.barValues = {};
  new MutationObserver((records) => {
    for (const { target } of records) {
      if (target.tagName !== "PROGRESS") continue;
      const name = target.id || target.closest("[data-stage]").dataset.stage;
      (window.barValues[name] ??= []).push(target.value / target.max);
    }
  }).observe(document.body, { subtree: true, attributes: true, attributeFilter: ["value"] });
}"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture
async def full_stack(make_settings: Callable[..., Settings], redis: Redis) -> AsyncIterator[Stack]:
    """All four roles, as `vidstream dev` runs them."""
    async with Stack(make_settings()) as stack:
        yield stack


def gw(stack: Stack) -> str:
    assert stack.gateway is not None
    return stack.gateway.url


DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 375, "height": 740}


class Visit:
    """A page in a fresh browser context (1280x900 unless told), its script errors collected."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        # A 401 is how the page learns it needs a key, a 422 what is wrong with a timeline;
        # Chrome logs them all the same.
        expected = ("status of 401", "status of 422")
        # A gateway without GET /v1/models answers it 404: the page then offers English only.
        unlisted = "status of 404" in message.text and message.location["url"].endswith(
            "/v1/models"
        )
        expected_now = unlisted or any(e in message.text for e in expected)
        if message.type == "error" and not expected_now:
            self.errors.append(message.text)

    @classmethod
    async def open(cls, browser: Browser, url: str, viewport: ViewportSize = DESKTOP) -> Visit:
        context = await browser.new_context(viewport=viewport)
        visit = cls(await context.new_page())
        await visit.page.goto(url)
        await visit.page.wait_for_function("() => window.vidstream !== undefined")
        return visit

    async def start(self, video: Path, *options: str) -> None:
        """Choose `options` (radio selectors), pick the video and start."""
        for option in options:
            await self.page.check(option)
        await self.page.set_input_files("#file", video)
        await self.page.click("#start")

    async def status(self, status: str, timeout_ms: int = JOB_TIMEOUT_MS) -> None:
        await expect(self.page.locator("#job-status")).to_have_attribute(
            "data-status", status, timeout=timeout_ms
        )

    async def logged_ids(self) -> list[str]:
        ids: list[str] = await self.page.eval_on_selector_all(
            "#log li", "items => items.map(li => li.dataset.id)"
        )
        return ids


async def server_events(http: aiohttp.ClientSession, stack: Stack, job_id: str) -> list[str]:
    async with http.get(f"{gw(stack)}/v1/jobs/{job_id}/events") as r:
        assert r.status == 200
        return [e["id"] for e in (await r.json())["events"]]


@pytest.mark.slow
@browser_test
async def test_upload_follow_play_and_download(
    full_stack: Stack, browser: Browser, clip: Clip, http: aiohttp.ClientSession
) -> None:
    """A person uploads a clip, watches it upload and run stage by stage, plays it subtitled."""
    visit = await Visit.open(browser, f"{gw(full_stack)}/")
    page = visit.page
    # It offers what the gateway makes from a video, as the gateway names it (GET /v1/kinds).
    async with http.get(f"{gw(full_stack)}/v1/kinds") as r:
        offered = [k for k in (await r.json())["kinds"] if k["from_video"]]
    choices = page.locator("#kind-choice label[title]")
    await expect(choices).to_have_text([f" {k['title']}" for k in offered])
    await page.evaluate(RECORD_BARS)
    await visit.start(clip.path, "input[name=burn][value=false]")
    await visit.status("completed")

    bars: dict[str, list[float]] = await page.evaluate("window.barValues")
    assert bars["upload-bar"][-1] == 1.0, bars
    assert bars["transcribe"][-1] == 1.0 and bars["render"][-1] == 1.0, bars
    assert any(0 < v < 1 for v in bars["transcribe"]), bars  # it moved, not only jumped to full
    assert (await page.text_content("#upload-text") or "").startswith("Uploaded clip.mp4 (")

    # The rendered MP4 plays, with the VTT output as the subtitle track, shown.
    await page.wait_for_function(
        "() => document.querySelector('#player track')?.readyState === 2", timeout=10_000
    )
    await page.evaluate("() => { const v = document.querySelector('#player'); v.muted = true; }")
    await page.evaluate("() => document.querySelector('#player').play()")
    await page.wait_for_function(
        "() => document.querySelector('#player').currentTime > 0.5", timeout=10_000
    )
    video: dict[str, Any] = await page.evaluate("""() => {
      const v = document.querySelector('#player'), t = v.textTracks[0];
      return { src: v.currentSrc, width: v.videoWidth, tracks: v.textTracks.length, mode: t.mode,
               cues: [...t.cues].map(c => c.text).join(' ') };
    }""")
    job_id = await page.text_content("#job-id")
    async with http.get(f"{gw(full_stack)}/v1/jobs/{job_id}") as r:
        job = await r.json()
    assert job["status"] == "completed" and job["options"]["burn_subtitles"] is False
    assert URL(video["src"]).path == URL(job["outputs"]["video"]["url"]).path
    assert video["width"] == 640 and video["tracks"] == 1 and video["mode"] == "showing"
    heard = set(words_of(video["cues"]))
    assert sum(w in heard for w in clip.words) / len(clip.words) >= 0.75, video["cues"]

    # Every output is offered, and a download link works.
    links = await page.eval_on_selector_all("#downloads a", "links => links.map(a => a.href)")
    assert {URL(u).path for u in links} == {URL(o["url"]).path for o in job["outputs"].values()}
    srt = next(u for u in links if ".srt" in u)
    async with http.get(srt) as r:
        assert r.status == 200 and "-->" in await r.text()

    # The event log is the job's history, once each; the recent list names the job.
    assert await visit.logged_ids() == await server_events(http, full_stack, job["id"])
    await expect(page.locator(f'#recent li[data-id="{job["id"]}"] .pill')).to_have_attribute(
        "data-status", "completed"
    )

    # The README's picture: paused while the first sentence is spoken, its subtitle showing.
    spoken = clip.spoken[0]
    await page.evaluate(
        "(at) => { const v = document.querySelector('#player'); v.pause(); v.currentTime = at; }",
        (spoken.start + spoken.end) / 2,
    )
    await page.wait_for_function(
        "() => document.querySelector('#player').textTracks[0].activeCues.length > 0"
    )
    await page.wait_for_function("() => !document.querySelector('#player').seeking")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "screenshot.png"))
    if os.environ.get("VIDSTREAM_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(ARTIFACTS / "screenshot.png", README_SCREENSHOT)

    # Coming back later: the job is read afresh and shown again, its history once.
    await page.reload()
    await visit.status("completed")
    await page.wait_for_selector("#log li[data-event=completed]", state="attached")
    assert await visit.logged_ids() == await server_events(http, full_stack, job["id"])
    await page.wait_for_function("() => document.querySelector('#player').readyState >= 1")
    assert not visit.errors, visit.errors


@pytest.mark.slow
@browser_test
async def test_a_dropped_connection_misses_nothing(
    full_stack: Stack, browser: Browser, clip: Clip, http: aiohttp.ClientSession
) -> None:
    """The socket drops mid-job; the page reconnects and shows every event once, to the end."""
    visit = await Visit.open(browser, f"{gw(full_stack)}/")
    page = visit.page
    await visit.start(clip.path)
    await page.wait_for_selector("#log li[data-event=progress]", state="attached", timeout=60_000)
    dropped = await page.evaluate("window.vidstream.dropConnection()")
    assert dropped["status"] not in TERMINAL, dropped  # the drop really happened mid-job
    await visit.status("completed")

    assert await page.evaluate("window.vidstream.connections") >= 2
    job_id = await page.text_content("#job-id")
    assert job_id
    shown = await visit.logged_ids()
    assert len(shown) == len(set(shown)), shown
    assert shown == await server_events(http, full_stack, job_id)
    assert dropped["lastEventId"] in shown[:-1]
    full = await page.eval_on_selector_all(".stage progress", "bars => bars.map(b => b.value)")
    assert full == [100, 100]
    assert not visit.errors, visit.errors


# The player's media once its metadata is in, or an error after 10 s.
PLAYER_METADATA = """() => new Promise((resolve, reject) => {
  const v = document.querySelector('#player');
  const done = () => resolve({ src: v.currentSrc, duration: v.duration, width: v.videoWidth,
                               poster: v.poster });
  if (v.readyState >= 1) return done();
  v.addEventListener('loadedmetadata', done, { once: true });
  setTimeout(() => reject(new Error(`no metadata: readyState ${v.readyState}`)), 10_000);
})"""


@pytest.mark.slow
@browser_test
async def test_compose_a_timeline_play_and_download(
    full_stack: Stack, browser: Browser, http: aiohttp.ClientSession
) -> None:
    """The example timeline, with a word of the person's, renders and plays; mistakes are named."""
    visit = await Visit.open(browser, f"{gw(full_stack)}/")
    page = visit.page
    example = json.loads(await page.input_value("#timeline"))
    assert example["output"]["duration"] == 4
    await page.fill("#var-name", "Quokkafest")
    async with page.expect_request(
        lambda r: r.method == "POST" and URL(r.url).path == "/v1/jobs"
    ) as sent:
        await page.click("#render")
    assert (await sent.value).post_data_json == {
        "kind": "compose", "timeline": example, "variables": {"name": "Quokkafest"},
        "preview": True,
    }  # fmt: skip
    await visit.status("completed")

    job_id = await page.text_content("#job-id")
    async with http.get(f"{gw(full_stack)}/v1/jobs/{job_id}") as r:
        job = await r.json()
    assert job["kind"] == "compose" and {"video", "poster", "preview"} <= set(job["outputs"])
    await expect(page.locator("#job-title")).to_have_text("Composed video")
    full = await page.eval_on_selector_all(".stage progress", "bars => bars.map(b => b.value)")
    assert full == [100]

    # The video plays (the preview only stands in until it is stored), as long as the timeline.
    await expect(page.locator("#player")).to_have_attribute("data-output", "video")
    video: dict[str, Any] = await page.evaluate(PLAYER_METADATA)
    assert URL(video["src"]).path == URL(job["outputs"]["video"]["url"]).path
    assert video["duration"] == pytest.approx(4, abs=0.1) and video["width"] == 640
    assert URL(video["poster"]).path == URL(job["outputs"]["poster"]["url"]).path

    # Every output is offered, the poster and the preview among them.
    downloads = page.locator("#downloads a")
    await expect(downloads.filter(has_text="Poster (JPEG)")).to_have_count(1)
    await expect(downloads.filter(has_text="Preview")).to_have_count(1)
    links = await page.eval_on_selector_all("#downloads a", "links => links.map(a => a.href)")
    assert {URL(u).path for u in links} == {URL(o["url"]).path for o in job["outputs"].values()}
    poster = await downloads.filter(has_text="Poster").get_attribute("href")
    async with http.get(poster or "") as r:
        assert r.status == 200 and (await r.read())[:3] == b"\xff\xd8\xff"  # a JPEG
    await expect(page.locator(f'#recent li[data-id="{job_id}"] .pill')).to_have_attribute(
        "data-status", "completed"
    )

    # A timeline the gateway refuses: each problem by its path, under the timeline, and the
    # job shown stays.
    wrong = {**example, "output": {**example["output"], "width": 641}}
    await page.fill("#timeline", json.dumps(wrong, indent=2))
    await page.click("#render")
    said = page.locator("#timeline-error")
    await expect(said).to_be_visible()
    await expect(said.locator("li").first).to_contain_text("timeline.output.width: ")
    await expect(page.locator("#timeline")).to_have_attribute("aria-invalid", "true")
    assert await page.text_content("#job-id") == job_id

    # Not JSON at all: said beside the timeline, and nothing is sent.
    await page.fill("#timeline", '{"output": {"width": 640,')
    await page.click("#render")
    await expect(page.locator("#timeline-error")).to_contain_text("This is not JSON")
    async with http.get(f"{gw(full_stack)}/v1/jobs") as r:
        assert [j["id"] for j in (await r.json())["jobs"]] == [job_id]
    assert not visit.errors, visit.errors


@pytest.fixture
async def frontend() -> AsyncIterator[str]:
    """The page's own files served alone on another origin, as a hosted frontend serves them."""
    app = web.Application()
    app.add_routes(page_routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.mark.slow
@browser_test
async def test_a_frontend_elsewhere_asks_for_a_key(
    make_settings: Callable[..., Settings],
    redis: Redis,
    browser: Browser,
    clip: Clip,
    http: aiohttp.ClientSession,
    frontend: str,
) -> None:
    """On another origin, the page asks for a key after a 401, says when it is wrong, then works."""
    settings = make_settings(auth="on", api_keys=f"acme:{KEY}", cors_origins=(frontend,))
    async with Stack(settings, ("gateway", "notifier")) as stack:
        visit = await Visit.open(browser, f"{frontend}/?gateway={gw(stack)}")
        page = visit.page
        put_headers: list[dict[str, str]] = []

        async def spy(route: Route) -> None:
            put_headers.append(await route.request.all_headers())
            await route.continue_()

        await page.route(re.compile(r"/v1/objects/"), spy)
        await visit.start(clip.path)

        dialog = page.locator("#key-dialog")
        await expect(dialog).to_be_visible()
        await page.fill("#key-input", "vs_wrong000_not-a-key-anyone-was-given")
        await page.click("#key-form button[type=submit]")
        await expect(page.locator("#key-reason")).to_contain_text(
            f"not accepted by {URL(gw(stack)).authority}"
        )
        await expect(dialog).to_be_visible()
        await page.fill("#key-input", KEY)
        await page.click("#key-form button[type=submit]")

        await visit.status("queued", 10_000)  # no workers here: it waits
        await expect(page.locator("#connection")).to_have_text("live")
        kept = await page.evaluate(
            "(slot) => sessionStorage.getItem(slot)", f"vidstream.apiKey {gw(stack)}"
        )
        assert kept == KEY  # for this tab and this gateway only
        assert len(put_headers) == 1 and "authorization" not in put_headers[0], put_headers
        job_id = await page.text_content("#job-id")
        async with http.get(
            f"{gw(stack)}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {KEY}"}
        ) as r:
            job = await r.json()
        assert r.status == 200 and job["tenant"] == "acme" and job["status"] == "queued"

        await page.click("#cancel")
        await visit.status("cancelled", 10_000)
        await page.wait_for_selector("#log li[data-event=cancelled]", state="attached")
        assert not visit.errors, visit.errors


@pytest.fixture
async def failing_stack(
    make_settings: Callable[..., Settings], redis: Redis, faults: Faults
) -> AsyncIterator[Stack]:
    """All four roles, with an FFmpeg that fails on demand (tests/fakes/ffmpeg)."""
    async with Stack(make_settings(ffmpeg=str(FAKE_FFMPEG), retry_base_delay_s=0.2)) as stack:
        yield stack


@pytest.mark.slow
@browser_test
async def test_a_failed_job_reads_as_a_sentence_and_retry_is_offered_where_it_helps(
    failing_stack: Stack, browser: Browser, text_file: Path, clip: Clip, faults: Faults,
    http: aiohttp.ClientSession,
) -> None:  # fmt: skip
    """A file that is no video fails with a sentence saying why and no Retry (it would fail
    again); a failure of the service's own offers Retry, which runs the job again to the end."""
    stack = failing_stack
    visit = await Visit.open(browser, f"{gw(stack)}/")
    page = visit.page
    await visit.start(text_file)
    await visit.status("failed")
    error = page.locator("#job-error")
    await expect(error).to_contain_text("This file can't be used: ")
    job_id = await page.text_content("#job-id")
    async with http.get(f"{gw(stack)}/v1/jobs/{job_id}") as r:
        job = await r.json()
    assert job["error"]["code"] == "invalid_media"
    assert await error.text_content() == f"This file can't be used: {job['error']['message']}"
    await expect(page.locator("#retry")).to_be_hidden()
    refused = page.locator(f'#recent li[data-id="{job_id}"]')
    await expect(refused.locator(".pill")).to_have_attribute("data-status", "failed")
    await expect(refused.get_by_role("button", name="Retry")).to_have_count(0)

    # FFmpeg fails on every try: the service is at fault, and Retry is there.
    faults.fail("render", "always")
    await visit.start(clip.path, "input[name=burn][value=false]")
    await expect(page.locator("#job-id")).not_to_have_text(job_id or "")
    await visit.status("failed")
    await expect(error).to_contain_text("The video could not be converted.")
    second = await page.text_content("#job-id")
    await expect(
        page.locator(f'#recent li[data-id="{second}"]').get_by_role("button", name="Retry")
    ).to_have_count(1)
    faults.clear("render")
    await page.click("#retry")
    await visit.status("completed")
    await expect(page.locator("#retry")).to_be_hidden()
    assert await visit.logged_ids() == await server_events(http, stack, second or "")
    assert not visit.errors, visit.errors


async def test_static_files_are_public_and_confined(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession
) -> None:
    """The page and its files load without a key, under a strict CSP; nothing else is reachable."""
    async with Stack(make_settings(auth="on", api_keys=f"acme:{KEY}"), ("gateway",)) as stack:
        base = gw(stack)
        async with http.get(f"{base}/") as r:
            html = await r.text()
            assert r.status == 200 and r.content_type == "text/html"
            csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp
        assert "connect-src 'self' ws: wss: http: https:" in csp

        assets = re.findall(r'(?:src|href)="(static/[^"]+)"', html)
        assert {"static/app.js", "static/style.css"} <= set(assets)
        types = {".js": "text/javascript", ".css": "text/css"}
        for asset in [*assets, "static/api.js"]:
            async with http.get(f"{base}/{asset}") as r:
                assert r.status == 200, asset
                assert r.content_type == types[Path(asset).suffix]
                assert r.headers["Content-Security-Policy"] == csp
                assert r.headers["Cache-Control"] == "public, max-age=300"

        for path in (
            "/static/../vidstream/http/page.py", "/static/..%2Fpage.py", "/static/%2e%2e/page.py",
            "/static/..", "/static/", "/static/index.htm", "/static/%2Fetc%2Fpasswd",
        ):  # fmt: skip
            async with http.get(URL(base + path, encoded=True)) as r:
                assert r.status == 404, (path, r.status)


# -- on a phone ---------------------------------------------------------------------------------

# Whether anything sticks out sideways: the document, any card or header, or anything in a card.
OVERFLOW = """() => {
  const shown = [...document.querySelectorAll('.top, .notice, .card')]
    .filter((e) => e.getClientRects().length > 0);
  const out = shown.filter((e) => {
    const box = e.getBoundingClientRect();
    return box.left < 0 || box.right > innerWidth || e.scrollWidth > e.clientWidth;
  });
  return { scrollWidth: document.documentElement.scrollWidth, innerWidth,
           out: out.map((e) => e.id || e.className) };
}"""


async def fits(page: Page) -> None:
    found: dict[str, Any] = await page.evaluate(OVERFLOW)
    assert found["scrollWidth"] <= found["innerWidth"] and not found["out"], found


@pytest.mark.slow
@browser_test
async def test_on_a_phone_nothing_sticks_out_and_each_thing_is_said_where_it_happens(
    full_stack: Stack, browser: Browser, clip: Clip, tmp_path: Path
) -> None:
    """At 375 px wide: a file the service would refuse is refused beside the file input before
    any of it is sent; the new job's card comes into view, its bars named for it; nothing is
    wider than the screen; a broken timeline is said under the timeline."""
    visit = await Visit.open(browser, f"{gw(full_stack)}/", PHONE)
    page = visit.page
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/v1/uploads" in r.url else None)
    await fits(page)

    notes = tmp_path / "notes.txt"
    notes.write_text("Not a video at all.\n")
    await page.set_input_files("#file", notes)
    said = page.locator("#file-error")
    await expect(said).to_have_text(re.compile(r"^notes\.txt is not a video or sound file"))
    await expect(page.locator("#file")).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#start")).to_be_disabled()
    await page.evaluate("() => document.querySelector('#job-form').requestSubmit()")
    drop, box = await page.locator("#drop").bounding_box(), await said.bounding_box()
    assert drop and box and 0 <= box["y"] - (drop["y"] + drop["height"]) <= 16, (drop, box)
    await expect(said).to_be_in_viewport()

    # A word that cannot break (a URL said aloud, as Whisper writes it): on a phone the cue
    # still fits the screen, read and while it is corrected.
    long_word = "https://example.com/" + "x" * 40

    async def unbroken(route: Route) -> None:
        response = await route.fetch()
        doc = await response.json()
        doc["segments"][0]["words"][0]["word"] = long_word
        await route.fulfill(response=response, json=doc)

    await page.route(re.compile(r"/v1/objects/.*transcript.*\.json"), unbroken)
    # The captions as a person shapes them here: a box, short lines, karaoke.
    await page.select_option("#caption-style", "boxed")
    await page.select_option("#max-chars", "20")
    await page.check("#karaoke")
    await visit.start(clip.path)
    await expect(said).to_be_hidden()
    await expect(page.locator("#job")).to_be_in_viewport()  # scrolled down to it
    assert await page.evaluate("scrollY") > 0
    bars = {
        name: page.get_by_role("progressbar", name=name, exact=True)
        for name in ("Upload of clip.mp4", "Transcribe: clip.mp4", "Render: clip.mp4")
    }
    for bar in bars.values():
        await expect(bar).to_have_count(1)
    await expect(bars["Upload of clip.mp4"]).to_have_attribute("aria-valuenow", "100")
    await fits(page)
    await visit.status("completed")
    for name in ("Transcribe: clip.mp4", "Render: clip.mp4"):
        await expect(bars[name]).to_have_attribute("aria-valuenow", "100")
    async with aiohttp.ClientSession() as http, http.get(f"{gw(full_stack)}/v1/jobs") as r:
        [job] = (await r.json())["jobs"]
    assert {k: job["options"].get(k) for k in ("style", "max_chars_per_line", "karaoke")} == {
        "style": "boxed",
        "max_chars_per_line": 20,
        "karaoke": True,
    }, job["options"]
    await expect(page.locator("#cues .cue").first).to_be_visible()  # the transcript, below
    player, cues = (
        await page.locator("#player").bounding_box(),
        await page.locator("#cues").bounding_box(),
    )
    assert player and cues and cues["y"] >= player["y"] + player["height"], (player, cues)
    await fits(page)
    await page.get_by_role("button", name=long_word).click()  # open for correcting
    await expect(page.locator(".word-input")).to_be_visible()
    await fits(page)
    await page.keyboard.press("Escape")
    assert sent == [f"{gw(full_stack)}/v1/uploads"], sent  # the clip's only, once
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "phone.png"), full_page=True)

    # Not JSON: said under the timeline, which is on screen with it.
    await page.fill("#timeline", '{"output": {"width": 640,')
    await page.click("#render")
    error = page.locator("#timeline-error")
    await expect(error).to_contain_text("This is not JSON")
    await expect(error).to_be_in_viewport()
    await expect(page.locator("#notice")).to_be_hidden()
    await fits(page)
    assert not visit.errors, visit.errors


# -- reading, correcting and rendering again ----------------------------------------------------


@pytest.fixture(scope="session")
def grey_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The three sentences spoken over dark grey at 720p (plain, for OCR); and its length."""
    return spoken_over_grey(tmp_path_factory.mktemp("grey"))


# The words the editor shows, as the page has them.
WORDS = """() => [...document.querySelectorAll('#cues .word')].map((w) => ({
  text: w.textContent, cue: Number(w.dataset.cue), doubt: w.classList.contains('doubt'),
  title: w.title }))"""


async def job_of(http: aiohttp.ClientSession, stack: Stack, job_id: str) -> dict[str, Any]:
    async with http.get(f"{gw(stack)}/v1/jobs/{job_id}") as r:
        assert r.status == 200
        job: dict[str, Any] = await r.json()
    return job


@pytest.mark.slow
@browser_test
async def test_a_transcript_read_corrected_and_rendered_again(
    full_stack: Stack, browser: Browser, grey_clip: tuple[Path, float],
    http: aiohttp.ClientSession, tmp_path: Path,
) -> None:  # fmt: skip
    """The finished video's transcript shows beside it, the spoken cue lit as it plays, unsure
    words marked; a word clicked plays from there and is corrected; "Save and re-render" makes
    a render job that burns the correction in without transcribing again."""
    video, _ = grey_clip
    visit = await Visit.open(browser, f"{gw(full_stack)}/")
    page = visit.page

    # One word of the transcript as the page reads it is made unsure, to see it marked.
    async def unsure(route: Route) -> None:
        response = await route.fetch()
        doc = await response.json()
        doc["segments"][0]["words"][0]["probability"] = 0.31
        await route.fulfill(response=response, json=doc)

    await page.route(re.compile(r"/v1/objects/.*transcript.*\.json"), unsure)
    await visit.start(video)
    await visit.status("completed")
    first = await page.text_content("#job-id") or ""
    done = await job_of(http, full_stack, first)
    doc = json.loads(await fetch(http, done["outputs"]["transcript"]["url"]))
    segments = doc["segments"]
    assert len(segments) >= 2, segments  # the three sentences are not all one

    # The cues are the transcript's segments, word by word, beside the player.
    cues = page.locator("#cues .cue")
    await expect(cues).to_have_count(len(segments))
    words: list[dict[str, Any]] = await page.evaluate(WORDS)
    assert [w["text"] for w in words] == [w["word"] for s in segments for w in s["words"]]
    player = await page.locator("#player").bounding_box()
    listed = await page.locator("#cues").bounding_box()
    assert player and listed and listed["x"] >= player["x"] + player["width"], (player, listed)
    marked = [w for w in words if w["doubt"]]
    heard = [w for s in segments for w in s["words"]]
    assert marked and marked[0] == {**words[0], "doubt": True}, marked
    assert "sure of it" in marked[0]["title"] and "31%" in marked[0]["title"]
    assert [w["doubt"] for w in words[1:]] == [h["probability"] < 0.5 for h in heard[1:]]

    # Playing lights the cue being spoken: the last one once it is reached.
    last = len(segments) - 1
    await page.evaluate(
        "() => { const v = document.querySelector('#player'); v.muted = true; v.play(); }"
    )
    await page.wait_for_function(
        """([start, last]) => document.querySelector('#player').currentTime > start + 0.3
             && document.querySelector('#cues .cue.now')?.dataset.index === String(last)""",
        arg=[segments[last]["start"], last],
        timeout=20_000,
    )
    await expect(page.locator("#cues .cue.now")).to_have_count(1)
    await page.evaluate("() => document.querySelector('#player').pause()")

    # A cue's time clicked plays from its start.
    await page.locator('#cues .cue[data-index="0"] .cue-time').click()
    at = await page.evaluate("document.querySelector('#player').currentTime")
    assert at == pytest.approx(segments[0]["start"], abs=0.05)
    await expect(page.locator("#cues .cue.now")).to_have_attribute("data-index", "0")

    # A word clicked plays from there and opens for correcting; Enter keeps the correction.
    cue, index, word = next(
        (c, i, w)
        for c, s in enumerate(segments)
        for i, w in enumerate(s["words"])
        if "window" in w["word"].lower()
    )
    await page.locator(f'#cues [data-cue="{cue}"][data-word="{index}"]').click()
    at = await page.evaluate("document.querySelector('#player').currentTime")
    assert at == pytest.approx(word["start"], abs=0.05)
    field = page.locator("#cues input.word-input")
    await expect(field).to_have_value(word["word"])
    await field.fill("ZEBRA")
    await field.press("Enter")
    corrected = page.locator(f'#cues [data-cue="{cue}"][data-word="{index}"]')
    await expect(corrected).to_have_text("ZEBRA")
    await expect(corrected).to_have_class(re.compile(r"\bedited\b"))
    await expect(corrected).to_have_class(re.compile(r"\bsaid\b"))  # being said at this time
    await expect(page.locator("#edits")).to_have_text("1 correction")

    async with page.expect_request(
        lambda r: r.method == "POST" and URL(r.url).path == "/v1/jobs"
    ) as request:
        await page.click("#rerender")
    body = (await request.value).post_data_json
    assert (body["kind"], body["job"], body["burn_subtitles"]) == ("render", first, True)
    fixed = body["transcript"]["segments"][cue]
    assert "ZEBRA" in fixed["text"].split() and "window" not in fixed["text"].lower()
    assert fixed["text"] == " ".join(w["word"] for w in fixed["words"])  # its words kept

    # The render job is followed like any other, and its transcript shown in turn.
    await expect(page.locator("#job-id")).not_to_have_text(first)
    await visit.status("completed")
    again_id = await page.text_content("#job-id") or ""
    await expect(page.locator("#job-title")).to_have_text("talk.mp4 (corrected)")
    await expect(page.locator(".stage")).to_have_count(1)
    await expect(page.locator(f'#cues [data-cue="{cue}"]', has_text="ZEBRA")).to_have_count(1)
    again = await job_of(http, full_stack, again_id)
    assert (again["kind"], again["stages"], again["source"]) == (
        "render",
        ["render"],
        done["source"],
    )
    async with http.get(f"{gw(full_stack)}/v1/jobs/{again_id}/events") as r:
        events = (await r.json())["events"]
    assert [e["stage"] for e in events if e["event"] == "started"] == ["render"]  # not transcribed
    srt = (await fetch(http, again["outputs"]["srt"]["url"])).decode()
    assert any("ZEBRA" in text for _, _, text in parse_cues(srt)), srt
    rendered = tmp_path / "again.mp4"
    rendered.write_bytes(await fetch(http, again["outputs"]["video"]["url"]))
    # While the corrected word is said, its caption is on screen.
    said = (word["start"] + word["end"]) / 2
    seen = await asyncio.to_thread(burnt_in, rendered, tmp_path, said)
    assert "zebra" in seen and "window" not in seen, seen
    assert not visit.errors, visit.errors


# -- the speech model and language --------------------------------------------------------------

# The lead adds GET /v1/models on main; until this branch has it, the page hides the picker.
LISTS_MODELS = any(
    '"/v1/models"' in p.read_text() for p in (ROOT / "vidstream" / "http").glob("*.py")
)


@pytest.mark.skipif(not LISTS_MODELS, reason="this gateway has no GET /v1/models yet")
@browser_test
async def test_the_bundled_english_model_offers_english_only(
    make_settings: Callable[..., Settings], redis: Redis, browser: Browser, clip: Clip,
    http: aiohttp.ClientSession,
) -> None:  # fmt: skip
    """With the bundled tiny.en the page names the model and offers English alone: no Detect,
    no translating; a job asks for English and names no model (the default is meant)."""
    async with Stack(make_settings(), ("gateway",)) as stack:
        async with http.get(f"{gw(stack)}/v1/models") as r:
            listed = await r.json()
        assert listed["default"] == "tiny.en"
        visit = await Visit.open(browser, f"{gw(stack)}/")
        page = visit.page
        await expect(page.locator("#model-choice")).to_be_visible()
        await expect(page.locator("#model")).to_have_value("tiny.en")
        await expect(page.locator("#language option")).to_have_text(["English"])
        await expect(page.locator("#translate-choice")).to_be_hidden()
        async with page.expect_request(
            lambda r: r.method == "POST" and URL(r.url).path == "/v1/jobs"
        ) as request:
            await visit.start(clip.path)
        body = (await request.value).post_data_json
        assert body["language"] == "en" and "model" not in body and "task" not in body, body
        assert not visit.errors, visit.errors


@pytest.mark.skipif(LISTS_MODELS, reason="this gateway lists its models")
@browser_test
async def test_without_a_model_list_the_page_offers_english(
    make_settings: Callable[..., Settings], redis: Redis, browser: Browser
) -> None:
    """A gateway that does not list its models (404): no model picker, English only."""
    async with Stack(make_settings(), ("gateway",)) as stack:
        visit = await Visit.open(browser, f"{gw(stack)}/")
        page = visit.page
        await page.wait_for_function("() => window.vidstream.speech !== undefined")
        await expect(page.locator("#model-choice")).to_be_hidden()
        await expect(page.locator("#language option")).to_have_text(["English"])
        await expect(page.locator("#translate-choice")).to_be_hidden()
        assert not visit.errors, visit.errors
