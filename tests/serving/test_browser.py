"""End to end in a real headless Chromium (Debian's package, driven by Playwright): upload, wait, read the scores.

Skips when /usr/bin/chromium is absent. Saves test-artifacts/webapp-*.png for a human to look at.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("playwright")
from playwright.sync_api import expect  # noqa: E402

from aletheia.serving.browser import CHROMIUM, launch_chromium

from .conftest import ARTIFACTS, ASTRONAUT, LONG_VIDEO_FRAMES, RunningServer

expect.set_options(timeout=60_000)  # a model run on a busy two-core machine can take seconds

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)"),
]


PHONE = {"width": 390, "height": 844}


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            yield browser
        finally:
            browser.close()


def _open(browser: object, server: RunningServer, path: str = "/", viewport: dict | None = None) -> object:
    page = browser.new_page(viewport=viewport or {"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    outside: list[str] = []
    # The app must work with nothing but its own server: refuse (and remember) any other request.
    page.route(
        "**/*",
        lambda r: (
            r.continue_()
            if r.request.url.startswith(server.url)
            else (outside.append(r.request.url), r.abort())
        ),
    )
    page.outside_requests = outside
    page.goto(server.url + path)
    return page


@pytest.fixture
def page(browser: object, server: RunningServer) -> object:
    return _open(browser, server)


def _screenshot(page: object, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_upload_a_photo_and_read_the_scores(page: object, server: RunningServer) -> None:
    expected = server.pipelines["b4"].predict(ASTRONAUT)
    score, label = expected.faces[0].score, expected.label
    page.locator("#photo input[type=file]").set_input_files(str(ASTRONAUT))
    verdict = page.locator("#verdict")
    expect(verdict).to_contain_text("Verdict:")
    page.locator("#annotated img").wait_for()
    page.locator("#faces img").nth(1).wait_for()
    page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    _screenshot(page, "webapp-astronaut.png")

    text = verdict.inner_text()
    assert (
        f"Verdict: {'' if label == 'inconclusive' else 'likely '}{label}" in text and f"{score:.3f}" in text
    )
    assert re.search(rf"#1\s+{score:.3f}\s+\d\.\d\d\s+{label}", text), text  # score, spread, verdict
    assert "model card" in text and expected.to_json()["explanation"] in text
    captions = page.locator("#faces .caption-label").all_inner_texts()
    assert captions == [f"#1 {score:.3f} {label}", "#1 where it looked"]
    assert "not a map of what is fake" in page.locator("#faces").inner_text()
    # The report of this upload: one self-contained page, downloaded from the server itself.
    report = page.locator("#report")
    expect(report).to_be_enabled()
    with page.expect_download() as download:
        report.click()
    html = Path(download.value.path()).read_text()
    assert (
        html.startswith("<!DOCTYPE html>") and "data:image/jpeg;base64," in html and "astronaut.jpg" in html
    )
    assert expected.to_json()["provenance"]["input_sha256"] in html and not re.search(
        r"(src|href)=\"https?:", html
    )
    assert page.outside_requests == []


def _type_number(page: object, box: object, value: str) -> None:
    """Type a number into a Gradio number box until it holds: in a full run Gradio can still re-render the box just
    after the page loads and undo a typed value; the change reaches the server on Enter and blur."""
    for _ in range(20):
        box.fill(value)
        box.press("Enter")
        box.blur()
        page.wait_for_timeout(500)
        if box.input_value() == value:
            break
    expect(box).to_have_value(value)


def test_threshold_slider_and_bad_file_in_the_browser(page: object, tmp_path: Path) -> None:
    page.locator("#photo input[type=file]").set_input_files(str(ASTRONAUT))
    verdict = page.locator("#verdict")
    expect(verdict).to_contain_text("Verdict:")
    number = page.locator("#threshold input[type=number]")
    _type_number(page, number, "0")
    expect(verdict).to_contain_text("likely fake")
    _type_number(page, number, "1")
    expect(verdict).to_contain_text("likely real")
    # The report follows the threshold (written just after the verdict shows: poll for it).
    for _ in range(20):
        with page.expect_download() as download:
            page.locator("#report").click()
        html = Path(download.value.path()).read_text()
        if "threshold 1.000" in html:
            break
        page.wait_for_timeout(500)
    assert "threshold 1.000" in html and '<span class="verdict real">real</span>' in html

    page.locator("#photo button[aria-label='Clear']").click()
    expect(verdict).to_contain_text("Upload a photo")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(ASTRONAUT.read_bytes()[:4000])
    page.locator("#photo input[type=file]").set_input_files(str(cut))
    expect(verdict).to_contain_text("Could not read this file")
    expect(verdict).to_contain_text("cut.jpg: corrupt or truncated image")
    _screenshot(page, "webapp-bad-file.png")


def test_upload_a_video_and_read_the_people(page: object, astronaut_video: Path) -> None:
    # The clip has 8 frames, so the default 32 samples are all of them: one person, followed throughout.
    page.locator("#photo input[type=file]").set_input_files(str(astronaut_video))
    verdict = page.locator("#verdict")
    expect(verdict).to_contain_text("Verdict", timeout=120_000)
    text = verdict.inner_text()
    assert "1 person in" in text and re.search(
        r"\b0\s+\d\.\d{3}\s+\d+ of \d+ frames\s+(fake|real|inconclusive)", text
    ), text
    expect(page.locator("#annotated img")).to_be_visible()
    captions = page.locator("#faces .caption-label").all_inner_texts()
    assert captions and captions[0].startswith("person 0: "), captions
    _screenshot(page, "webapp-video.png")
    assert page.outside_requests == []


def test_on_a_phone_the_verdict_is_in_view_after_an_upload(
    browser: object, server: RunningServer, tmp_path: Path
) -> None:
    page = _open(browser, server, viewport=PHONE)
    page.locator("#photo input[type=file]").set_input_files(str(ASTRONAUT))
    verdict = page.locator("#verdict")
    expect(verdict).to_contain_text("Verdict")
    # The page scrolls the verdict to the top once the result is in.
    page.wait_for_function(
        "() => { const r = document.getElementById('verdict').getBoundingClientRect();"
        " return r.top >= 0 && r.bottom <= window.innerHeight; }"
    )
    page.screenshot(path=str(tmp_path / "phone-after-upload.png"))  # the viewport: what the phone shows
    box = verdict.bounding_box()
    assert box is not None and box["height"] > 0
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box
    assert box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"], box
    assert (tmp_path / "phone-after-upload.png").stat().st_size > 0
    assert page.outside_requests == []


def test_no_share_button_and_no_gradio_api_page_but_links_to_the_rest_docs(page: object) -> None:
    page.locator("#photo input[type=file]").set_input_files(str(ASTRONAUT))
    expect(page.locator("#verdict")).to_contain_text("Verdict")
    page.locator("#annotated img").wait_for()
    assert page.locator("button[title='Share'], button[aria-label='Share']").count() == 0
    assert page.get_by_text("Use via API").count() == 0 and page.locator("footer").count() == 0
    links = page.locator("#api-links a")
    assert [links.nth(i).get_attribute("href") for i in range(links.count())] == [
        "api/v1/docs",
        "api/v1/redoc",
    ]
    assert page.outside_requests == []


@pytest.mark.parametrize("path", ["/api/v1/docs", "/api/v1/redoc"])
def test_the_api_docs_load_from_this_server_alone(browser: object, server: RunningServer, path: str) -> None:
    page = _open(browser, server, path)
    # Both pages render the OpenAPI description: the jobs endpoint's summary is there once they have.
    expect(page.locator("body")).to_contain_text("Create Job")
    expect(page.locator("body")).to_contain_text("/api/v1/jobs")
    assert page.outside_requests == []
    page.wait_for_timeout(
        500
    )  # late images (ReDoc's sidebar logo) are refused by the page's policy, never sent
    assert page.outside_requests == []


def test_a_video_shows_its_progress_in_frames_and_can_be_cancelled(
    page: object, server: RunningServer, long_video: Path
) -> None:
    page.get_by_text("Video settings").click()
    frames = page.locator("#frames input[type=number]")
    _type_number(page, frames, str(LONG_VIDEO_FRAMES))
    page.locator("#photo input[type=file]").set_input_files(str(long_video))
    cancel = page.locator("#cancel")
    expect(cancel).to_be_visible()
    page.wait_for_function(rf"() => /\b\d+\/{LONG_VIDEO_FRAMES} frames\b/.test(document.body.innerText)")
    _screenshot(page, "webapp-video-progress.png")
    cancel.click()
    expect(page.locator("#verdict")).to_contain_text("Cancelled")
    expect(cancel).to_be_hidden()
    (job,) = [j for j in server.jobs._jobs.values() if j.name == long_video.name]
    assert job.status == "cancelled" and job.frames_done < job.frames_total == LONG_VIDEO_FRAMES
    assert page.outside_requests == []
