"""The README's example of a result line agrees with what the code writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from aletheia.cli import main

REPO = Path(__file__).resolve().parent.parent
ASTRONAUT = REPO / "examples" / "astronaut.jpg"
# Present only for models that score kinds of fake (see the README).
KIND_KEYS = {"scores"}


def _readme_example() -> dict:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"`detect` writes, per input, exactly.*?```json\n(.*?)```", text, re.S)
    assert block, "the README's JSON example is gone"
    return json.loads(block.group(1))


def test_the_readme_json_example_has_the_keys_and_model_of_a_real_result(capsys) -> None:
    from aletheia.models.checkpoints import read_checkpoint
    from aletheia.models.loader import DEFAULT_MODEL

    if not DEFAULT_MODEL.is_file():
        pytest.skip("no default model bundled in this checkout")
    example = _readme_example()
    assert main(["detect", str(ASTRONAUT), "--no-progress"]) == 0
    real = json.loads(capsys.readouterr().out)
    assert list(k for k in example if k not in KIND_KEYS) == list(k for k in real if k not in KIND_KEYS)
    face, real_face = example["faces"][0], real["faces"][0]
    assert list(k for k in face if k not in KIND_KEYS) == list(k for k in real_face if k not in KIND_KEYS)
    assert len(face["keypoints"]) == len(real_face["keypoints"]) and len(face["box"]) == 4
    assert example["model"] == real["model"] == DEFAULT_MODEL.name
    assert example["threshold"] == read_checkpoint(DEFAULT_MODEL)[1]["threshold"] == real["threshold"]
