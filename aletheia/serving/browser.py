"""Debian's headless Chromium as the browser test and the screenshot tool drive it (Playwright never downloads one)."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
# Sandboxing needs privileges a container lacks; the rest keeps the browser from reaching anything but the app.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]


def launch_chromium(playwright):  # playwright is a dev-only dependency, so not imported here
    """A headless Chromium browser from a `sync_playwright()` context."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
