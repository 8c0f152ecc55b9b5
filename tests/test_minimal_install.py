"""An install without the training extras works: pyproject's dependencies alone (no torch anywhere) detect faces.

The environment is built from this one's installed files: a fresh virtual environment that sees only the
distributions the runtime dependencies need (read from their metadata), linked into one folder. Nothing is
downloaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ASTRONAUT = ROOT / "examples" / "astronaut.jpg"


def _requirement_names(requirements: list[str]) -> list[str]:
    return [re.split(r"[ ;<>=!~\[(]", r, maxsplit=1)[0] for r in requirements if "extra ==" not in r]


def _closure(names: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        with contextlib.suppress(metadata.PackageNotFoundError):  # a requirement for another platform
            todo.extend(_requirement_names(metadata.requires(name) or []))
    return seen


@pytest.mark.slow
def test_detect_and_serve_modules_work_without_the_training_extras(tmp_path: Path) -> None:
    runtime = _requirement_names(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    )
    distributions = _closure(runtime)
    assert "torch" not in distributions and "onnxruntime" in distributions
    site = tmp_path / "site"
    for name in distributions:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for file in dist.files or []:
            source = Path(dist.locate_file(file)).resolve()
            target = site / str(file)
            if str(file).startswith("..") or not source.is_file() or target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(source, target)
    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True)
    (next((venv / "lib").glob("python3*")) / "site-packages" / "minimal.pth").write_text(str(site))
    script = f"""
import sys
try:
    import torch
except ImportError:
    pass
else:
    sys.exit("torch is importable: not a minimal install")
from aletheia.cli import main
import aletheia.serving  # the web app and REST API import too
code = main(["detect", {str(ASTRONAUT)!r}, "--no-progress", "-o", "out.jsonl"])
assert main(["models"]) == 2  # a command that needs torch says which extra to install (exit 2)
sys.exit(code)
"""
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'pip install "aletheia[train]"' in proc.stderr
    record = json.loads((tmp_path / "out.jsonl").read_text())
    assert len(record["faces"]) == 1 and 0 < record["score"] < 1
