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

from .conftest import ARTIFACTS, ASTRONAUT, RunningServer

expect.set_options(timeout=60_000)  # a model run on a busy two-core machine can take seconds

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)"),
]


@pytest.fixture
def page(server: RunningServer) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
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
            page.goto(server.url + "/")
            yield page
        finally:
            browser.close()


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


def test_threshold_slider_and_bad_file_in_the_browser(page: object, tmp_path: Path) -> None:
    page.locator("#photo input[type=file]").set_input_files(str(ASTRONAUT))
    verdict = page.locator("#verdict")
    expect(verdict).to_contain_text("Verdict:")
    number = page.locator("#threshold input[type=number]")
    number.fill("0")
    number.press("Enter")
    expect(verdict).to_contain_text("likely fake")
    number.fill("1")
    number.press("Enter")
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
