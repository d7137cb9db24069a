"""The page at `/`: a person uploads a video (or writes a timeline), follows it live, plays and
downloads the result.

The browser tests drive Debian's chromium (never a downloaded one) with Playwright against all
four roles running in the test's own process.
"""

from __future__ import annotations

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
from playwright.async_api import Browser, ConsoleMessage, Page, Route, async_playwright, expect
from redis.asyncio import Redis
from yarl import URL

from tests.conftest import TERMINAL
from tests.media import Clip, words_of
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


class Visit:
    """A page in a fresh browser context at 1280x900, with its script errors collected."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        # A 401 is how the page learns it needs a key, a 422 what is wrong with a timeline;
        # Chrome logs them all the same.
        expected = ("status of 401", "status of 422")
        if message.type == "error" and not any(e in message.text for e in expected):
            self.errors.append(message.text)

    @classmethod
    async def open(cls, browser: Browser, url: str) -> Visit:
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
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
    assert full == [1, 1]
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
    assert full == [1]

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

    # A timeline the gateway refuses: each problem by its path, and the job shown stays.
    wrong = {**example, "output": {**example["output"], "width": 641}}
    await page.fill("#timeline", json.dumps(wrong, indent=2))
    await page.click("#render")
    notice = page.locator("#notice")
    await expect(notice).to_be_visible()
    await expect(notice.locator("li").first).to_contain_text("timeline.output.width: ")
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


@pytest.mark.slow
@browser_test
async def test_a_failed_job_reads_as_a_sentence_and_can_be_retried(
    full_stack: Stack, browser: Browser, text_file: Path, http: aiohttp.ClientSession
) -> None:
    """A file that is no video fails with a sentence saying why; Retry runs it again."""
    visit = await Visit.open(browser, f"{gw(full_stack)}/")
    page = visit.page
    await visit.start(text_file)
    await visit.status("failed")
    error = page.locator("#job-error")
    await expect(error).to_contain_text("This file can't be used: ")
    job_id = await page.text_content("#job-id")
    async with http.get(f"{gw(full_stack)}/v1/jobs/{job_id}") as r:
        job = await r.json()
    assert job["error"]["code"] == "invalid_media"
    assert await error.text_content() == f"This file can't be used: {job['error']['message']}"

    await page.click("#retry")
    await expect(page.locator("#log li[data-event=queued]")).to_have_count(2)  # queued again
    await expect(page.locator("#log li[data-event=failed]")).to_have_count(2, timeout=30_000)
    await visit.status("failed")
    assert await visit.logged_ids() == await server_events(http, full_stack, job["id"])
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
