"""End to end in a real browser: bob signs in, uploads a WAV with the podcast preset, and watches
the job finish on pages that refresh themselves through htmx polling (no reload)."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connections

from media_jobs import samples, tasks
from media_jobs.models import Job, JobOutput, Preset

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

TIMEOUT_MS = 60_000
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SEEDED = importlib.import_module("media_jobs.migrations.0002_seed_presets_and_schedule").PRESETS
# Marks a document; a full reload or navigation would start a fresh window without it.
MARK = """() => {
  window.__marker = 1;
  window.__swaps = 0;
  document.body.addEventListener("htmx:afterSwap", () => { window.__swaps += 1; });
}"""


def chromium_path() -> str:
    """Return the system Chromium, or skip (fail on CI, where the test must run)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    message = "Chromium is not installed (looked for `chromium` and `chromium-browser` on PATH)."
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} CI must run the browser tests: install Chromium.")
    pytest.skip(message)


@pytest.fixture
def browser_context(monkeypatch) -> Iterator:
    """A fresh headless Chromium context; Django DB calls are allowed beside Playwright's loop."""
    executable = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API keeps an asyncio loop running in this thread, which Django would
    # otherwise take as "called from async code" for the test's own ORM calls.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    sync_api.expect.set_options(timeout=TIMEOUT_MS)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()
            browser.close()


def seeded_preset(slug: str) -> Preset:
    """Return a global preset, recreating it when a transactional test flushed the seed data."""
    spec = next(p for p in SEEDED if p["slug"] == slug)
    preset, _ = Preset.objects.get_or_create(
        workspace=None, slug=slug, defaults={**spec, "provider": "local"}
    )
    return preset


class Runner(threading.Thread):
    """Run a job the way a worker would, beside the live server, recording what it raised."""

    def __init__(self, job_id: int) -> None:
        super().__init__(name=f"run-job-{job_id}", daemon=True)
        self.job_id = job_id
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            tasks.run_job(self.job_id)
        except BaseException as exc:
            self.error = exc
        finally:
            connections.close_all()  # this thread's own connection


def is_mp3(data: bytes) -> bool:
    """Return whether data starts like an MP3: an ID3 tag or an MPEG-1 layer III frame sync."""
    return data[:3] == b"ID3" or data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2")


def watch_navigations(tab) -> list[str]:
    """Return a list that collects every URL the tab's main frame navigates to from now on."""
    seen: list[str] = []

    def record(frame) -> None:
        if frame == tab.main_frame:
            seen.append(frame.url)

    tab.on("framenavigated", record)
    return seen


def test_bob_uploads_and_watches_the_job_finish_live(
    live_server, browser_context, acme, bob, tmp_path, monkeypatch
):
    from playwright.sync_api import expect

    seeded_preset("podcast")
    # No worker runs here: note what would be queued and run it ourselves, while the pages watch.
    enqueued: list[int] = []
    monkeypatch.setattr(tasks, "enqueue_run_job", enqueued.append)
    wav = samples.speech_like(tmp_path / "browser-take.wav", seconds=4, gain_db=-24)
    base = live_server.url

    page = browser_context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))

    # Sign in through the real form; bob has one workspace, so home lands on it.
    page.goto(f"{base}/login/")
    page.get_by_label("Email").fill("bob@example.com")
    page.get_by_label("Password").fill("pw-bob@example.com")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/w/acme/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Acme")
    expect(page.locator(".topbar .user")).to_have_text("bob@example.com")

    # Upload the WAV with the podcast preset.
    page.get_by_role("link", name="Upload media").click()
    page.wait_for_url(f"{base}/w/acme/upload/")
    page.locator("#id_title").fill("Browser take")
    page.locator("#id_file").set_input_files(wav)
    page.locator("#id_preset").select_option(label="Podcast")
    page.get_by_role("button", name="Upload", exact=True).click()
    page.wait_for_url(re.compile(rf"^{re.escape(base)}/w/acme/jobs/\d+/$"))

    job = Job.objects.get(item__title="Browser take")
    assert page.url == f"{base}/w/acme/jobs/{job.pk}/"
    assert enqueued == [job.pk]  # queued once, after the upload's transaction committed
    assert job.status == Job.Status.PENDING
    live = page.locator("#job-live")
    expect(live.locator(".badge")).to_have_text("Pending")
    expect(live).to_have_attribute("hx-trigger", "every 2s")
    expect(live).to_contain_text("Outputs appear here when the job finishes.")
    expect(live.locator("a[download]")).to_have_count(0)

    # A second tab on the workspace overview: its jobs table polls as well.
    overview = browser_context.new_page()
    overview.on("pageerror", lambda exc: page_errors.append(str(exc)))
    overview.goto(f"{base}/w/acme/")
    row = overview.locator("#jobs-table tbody tr", has_text=f"#{job.pk}")
    expect(row.locator(".badge")).to_have_text("Pending")

    navigations = {"job": watch_navigations(page), "overview": watch_navigations(overview)}
    for tab in (page, overview):
        tab.wait_for_function("() => window.htmx !== undefined")
        tab.evaluate(MARK)

    runner = Runner(job.pk)
    runner.start()
    try:
        expect(live.locator(".badge")).to_have_text("Success")
        download_link = live.locator("a[download]")
        expect(download_link).to_have_count(1)
        expect(row.locator(".badge")).to_have_text("Success")
    finally:
        runner.join(TIMEOUT_MS / 1000)
    assert not runner.is_alive(), "the job did not finish"
    assert runner.error is None, runner.error
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCESS, job.error

    # The same documents, updated in place by htmx: no reload, no navigation.
    for tab, name in ((page, "job"), (overview, "overview")):
        assert tab.evaluate("window.__marker") == 1, f"the {name} page was reloaded"
        assert tab.evaluate("window.__swaps") >= 1, f"htmx never swapped the {name} page"
        assert navigations[name] == [], f"the {name} page navigated"
    # A finished job stops polling.
    expect(page.locator("#job-live")).not_to_have_attribute("hx-trigger", re.compile(".*"))
    expect(overview.locator("#jobs-table")).not_to_have_attribute("hx-trigger", re.compile(".*"))
    expect(page.locator("#job-live")).not_to_contain_text("Cancel job")

    # The output row shows the measured loudness; the link downloads the MP3.
    output = JobOutput.objects.get(job=job, kind="media")
    out_row = page.locator("#job-live tbody tr", has_text=output.filename)
    expect(out_row).to_contain_text(f"{output.statistics['integrated']:.1f}")
    # Before the click: clicking scrolls the link (and so the wide outputs table) into view.
    page.screenshot(path=str(tmp_path / "job-page.png"), full_page=True)
    with page.expect_download() as info:
        download_link.click()
    data = Path(info.value.path()).read_bytes()
    assert len(data) == output.size
    assert is_mp3(data), data[:4]
    assert info.value.suggested_filename == output.filename
    assert page_errors == []
