"""Make docs/screenshot.png: the web app in headless Chromium after uploading the public-domain astronaut photo.

    .venv/bin/python tools/make_screenshot.py [--model SPEC] [--photo examples/astronaut.jpg] [--output docs/screenshot.png]

Needs Debian's chromium (`apt-get install chromium`) and the playwright Python package; it never downloads a browser.
Without --model it uses the bundled default model (aletheia/assets/models/) when there is one; otherwise a seeded,
untrained EfficientNetAutoAttB4 whose file name says so in the picture, since its scores are meaningless. Re-run
once a trained model is bundled (or with e.g. --model EfficientNetAutoAttB4_DFDC).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

from aletheia.serving.browser import CHROMIUM, launch_chromium

REPO = Path(__file__).resolve().parent.parent
UNTRAINED_NAME = "untrained-demo-EfficientNetAutoAttB4.pth"


def untrained_checkpoint(folder: Path) -> Path:
    import torch

    from aletheia.models.efficientnet import EfficientNetAutoAttB4

    torch.manual_seed(0)
    path = folder / UNTRAINED_NAME
    torch.save({"net": EfficientNetAutoAttB4().state_dict()}, path)
    return path


def capture(url: str, photo: Path, output: Path, width: int = 1280, height: int = 900) -> None:
    """Upload `photo` in the app at `url`, wait for the verdict and every picture, and save a full-page PNG."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            # Only the app itself: the picture must not depend on (or leak to) anything online.
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(url) else r.abort())
            page.goto(url + "/")
            page.locator("#photo input[type=file]").set_input_files(str(photo))
            expect(page.locator("#verdict")).to_contain_text(
                re.compile(r"Verdict: (likely|inconclusive)"), timeout=60_000
            )
            page.locator("#annotated img").wait_for(timeout=30_000)
            page.locator("#faces img").first.wait_for(timeout=30_000)
            page.wait_for_function("() => [...document.images].every(i => i.complete)")
            output.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(output), full_page=True)
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="published weights name or checkpoint file (default: untrained demo)")
    parser.add_argument("--photo", type=Path, default=REPO / "examples" / "astronaut.jpg")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "screenshot.png")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"error: {CHROMIUM} not found; install Debian's chromium package", file=sys.stderr)
        return 1
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from aletheia.models.spec import DEFAULT_MODEL
    from aletheia.serving import BackgroundServer, build_app, load_pipelines

    with tempfile.TemporaryDirectory() as scratch:
        spec = args.model
        if spec is None and not DEFAULT_MODEL.is_file():
            print(
                "warning: no --model and no bundled model: the screenshot shows an untrained model's "
                "meaningless scores",
                file=sys.stderr,
            )
            spec = str(untrained_checkpoint(Path(scratch)))
        app = build_app(load_pipelines([spec] if spec else []))
        with BackgroundServer(app) as url:
            capture(url, args.photo, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
