"""One way from a name to a model (aletheia.models.spec): each kind of model spec means the same model on the command
line, in the server (over HTTP) and in the Python API, and a spec that names nothing is told clearly in each."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aletheia.cli import main
from aletheia.models.inference import export_paths
from aletheia.models.published import cached_weights_path
from aletheia.models.spec import (
    DEFAULT_MODEL,
    CheckpointError,
    UnknownModelSpecError,
    resolve_model_spec,
)
from aletheia.pipeline import DeepfakeDetectorPipeline

ROOT = Path(__file__).resolve().parent.parent
ASTRONAUT = ROOT / "examples" / "astronaut.jpg"
PUBLISHED = "EfficientNetAutoAttB4_DFDC"

pytestmark = pytest.mark.skipif(
    not DEFAULT_MODEL.is_file(), reason="no default model bundled in this checkout"
)


@pytest.fixture
def published(b4_checkpoint: Path) -> Iterator[str]:
    """PUBLISHED as `aletheia weights download` leaves it: a file in the (tests' private) weights cache. Tests never
    fetch ISPL's file; a B4 checkpoint of the same architecture under its name is resolved and loaded the same way.
    Removed afterwards: other tests expect it not to be downloaded."""
    target = cached_weights_path(PUBLISHED)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(b4_checkpoint, target)
    yield PUBLISHED
    target.unlink()


def _specs(published: str) -> list[str]:
    """One spec of each kind that names trained weights: bundled by name, a .pth file, an .onnx file, published."""
    return ["aletheia-lite2", str(DEFAULT_MODEL), str(export_paths(DEFAULT_MODEL)[0]), published]


def _answer(record: dict) -> tuple:
    """What must not depend on the interface: the model named, its weights' hash, the scores."""
    return record["model"], record["provenance"]["model_sha256"], record["score"]


def _cli_detect(spec: str, capsys) -> dict:
    assert main(["detect", str(ASTRONAUT), "--model", spec, "--no-progress"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    return json.loads(line)


def test_each_kind_of_spec_is_the_same_model_in_the_cli_the_server_and_the_api(
    published: str, capsys
) -> None:
    from aletheia.serving import BackgroundServer, build_app, load_pipelines

    specs = _specs(published)
    expected_kinds = ["bundled", "file", "file", "published"]
    assert [resolve_model_spec(spec).kind for spec in specs] == expected_kinds
    api = {spec: DeepfakeDetectorPipeline(spec).predict(ASTRONAUT).to_json() for spec in specs}
    cli = {spec: _cli_detect(spec, capsys) for spec in specs}
    pipelines = load_pipelines(specs)  # what `aletheia serve --model A --model B ...` holds
    with BackgroundServer(build_app(pipelines, examples=[])) as url:
        listed = httpx.get(f"{url}/api/v1/models", timeout=30).json()["models"]
        served = {}
        for spec in specs:
            files = {"file": ("astronaut.jpg", ASTRONAUT.read_bytes())}
            reply = httpx.post(f"{url}/api/v1/detect", files=files, data={"model": spec}, timeout=120)
            assert reply.status_code == 200, reply.text
            served[spec] = reply.json()
    for spec in specs:
        assert _answer(api[spec])[:2] == _answer(cli[spec])[:2] == _answer(served[spec])[:2], spec
        scores = [_answer(answers[spec])[2] for answers in (api, cli, served)]
        assert max(scores) - min(scores) < 1e-5, (spec, scores)
    # The names results print, and the one model under its three bundled spellings (by name, .pth, .onnx).
    assert [api[spec]["model"] for spec in specs] == [
        "aletheia-lite2.pth", "aletheia-lite2.pth", "aletheia-lite2.onnx", PUBLISHED,
    ]  # fmt: skip
    assert len({api[spec]["provenance"]["model_sha256"] for spec in specs[:3]}) == 1
    assert api[specs[0]]["score"] == api[specs[2]]["score"] != api[specs[3]]["score"]
    assert [row["name"] for row in listed] == list(pipelines)


def test_resolving_a_spec_imports_no_torch() -> None:
    """The detect path runs without torch (tests/test_minimal_install.py): resolution must not bring it in."""
    onnx = export_paths(DEFAULT_MODEL)[0]
    script = f"""
import sys
from aletheia.models.spec import resolve_model_spec
from aletheia.pipeline import DeepfakeDetectorPipeline
kinds = [resolve_model_spec(s).kind for s in (None, "aletheia-lite2", {str(DEFAULT_MODEL)!r}, {str(onnx)!r},
                                               {PUBLISHED!r})]
DeepfakeDetectorPipeline({str(onnx)!r}).predict({str(ASTRONAUT)!r})
print(kinds, "torch" in sys.modules)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["['bundled',", "'bundled',", "'file',", "'file',", "'published']", "False"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("spec", "message", "lists"),
    [
        ("aletheia-lite9", "unknown model 'aletheia-lite9'", True),
        ("weights/missing.pth", "no such checkpoint file", True),
        ("EfficientNetAutoAttLite0", "architecture without trained weights", False),
        (PUBLISHED, "weights download", False),
    ],
)
def test_a_spec_naming_no_usable_model_is_told_alike_everywhere(
    spec: str, message: str, lists: bool, capsys
) -> None:
    from aletheia.serving import load_pipelines

    assert not cached_weights_path(PUBLISHED).exists()  # here, published weights not downloaded
    for command in (["detect", str(ASTRONAUT), "--no-progress"], ["serve", "--port", str(_free_port())]):
        assert main([*command, "--model", spec]) == 2, command
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        # What can be named instead: the bundled model, the published weights, the architectures.
        assert not lists or all(
            name in err for name in ("aletheia-lite2", PUBLISHED, "EfficientNetAutoAttLite0")
        )
    for load in (DeepfakeDetectorPipeline, lambda s: load_pipelines([s])):
        with pytest.raises(CheckpointError, match=message):
            load(spec)


def test_a_request_naming_a_model_the_server_does_not_hold_gets_a_4xx_listing_those_it_does() -> None:
    from aletheia.serving import BackgroundServer, build_app

    with BackgroundServer(build_app([], examples=[])) as url:  # the default bundled model
        files = {"file": ("astronaut.jpg", ASTRONAUT.read_bytes())}
        by_stem = httpx.post(
            f"{url}/api/v1/detect", files=files, data={"model": "aletheia-lite2"}, timeout=60
        )
        # A file's path is not a name the server was given: it never looks at its disk for one.
        for model in ("aletheia-lite9", str(DEFAULT_MODEL)):
            refused = httpx.post(f"{url}/api/v1/detect", files=files, data={"model": model}, timeout=60)
            assert refused.status_code == 422, refused.text
            assert refused.json()["detail"] == f"unknown model {model!r}; this server has: aletheia-lite2.pth"
        card = httpx.get(f"{url}/api/v1/model-card", params={"model": "aletheia-lite2"}, timeout=30)
    assert by_stem.status_code == 200 and by_stem.json()["model"] == "aletheia-lite2.pth"
    assert card.status_code == 200 and card.text == (DEFAULT_MODEL.parent / "MODEL_CARD.md").read_text()


def test_an_onnx_file_runs_with_its_sidecar_alone_and_torch_needs_its_checkpoint(tmp_path: Path) -> None:
    onnx, sidecar = export_paths(DEFAULT_MODEL)
    alone = tmp_path / "mine.onnx"
    shutil.copyfile(onnx, alone)
    with pytest.raises(CheckpointError, match="needs its sidecar mine.onnx.json"):
        resolve_model_spec(alone)
    shutil.copyfile(sidecar, tmp_path / "mine.onnx.json")
    reference = DeepfakeDetectorPipeline().predict(ASTRONAUT)
    exported = DeepfakeDetectorPipeline(alone).predict(ASTRONAUT)
    assert (exported.model, exported.score) == ("mine.onnx", reference.score)
    assert (
        exported.provenance.model_sha256 == reference.provenance.model_sha256
    )  # exported from those weights
    with pytest.raises(CheckpointError, match="not with torch"):
        DeepfakeDetectorPipeline(alone, backend="torch")
    # Beside the checkpoint it was exported from, torch loads that checkpoint: the same scores.
    with_torch = DeepfakeDetectorPipeline(str(onnx), backend="torch").predict(ASTRONAUT)
    assert with_torch.model == "aletheia-lite2.onnx" and with_torch.score == pytest.approx(
        reference.score, abs=1e-5
    )
    with pytest.raises(
        CheckpointError, match="an export of EfficientNetAutoAttLite2Kinds, not of EfficientNetB4"
    ):
        resolve_model_spec(alone, arch="EfficientNetB4")


def test_a_file_wins_over_a_name_and_the_python_api_keeps_its_two_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, b4_checkpoint: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_model_spec("aletheia-lite2").kind == "bundled"
    shutil.copyfile(b4_checkpoint, tmp_path / "aletheia-lite2")  # a file of that name here means that file
    assert (resolve_model_spec("aletheia-lite2").kind, resolve_model_spec("aletheia-lite2").checkpoint) == (
        "file",
        Path("aletheia-lite2"),
    )
    # model_checkpoint=FILE with model_name naming its architecture, as before.
    pipeline = DeepfakeDetectorPipeline("EfficientNetAutoAttB4", b4_checkpoint, backend="torch")
    assert (pipeline.model_spec.kind, pipeline.model_spec.architecture) == ("file", "EfficientNetAutoAttB4")
    assert pipeline.model_label == b4_checkpoint.name and pipeline.config.name == "EfficientNetAutoAttB4"
    with pytest.raises(UnknownModelSpecError):
        resolve_model_spec("no-such-model")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        DeepfakeDetectorPipeline(model_checkpoint="no-such-model")
