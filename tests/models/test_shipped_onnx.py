"""The ONNX files shipped in the package: current with the weights beside them, equal to torch, and enough to detect
without torch (a subprocess that imports no torch, on a real photo)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from aletheia.faces.networks import FULL_RANGE, SHORT_RANGE
from aletheia.io import load_image
from aletheia.models.inference import BUNDLED_MODEL, export_paths, exported_model, sha256_file
from aletheia.models.loader import load_classifier
from aletheia.models.preprocessing import normalise

REPO_ROOT = Path(__file__).resolve().parents[2]
ASTRONAUT = REPO_ROOT / "examples" / "astronaut.jpg"
TOL = 1e-4  # the bound for "the same scores"

pytestmark = pytest.mark.skipif(
    not BUNDLED_MODEL.is_file(), reason="no default model bundled in this checkout"
)


@pytest.fixture(scope="module")
def torch_model():
    return load_classifier(None, BUNDLED_MODEL)


def _face_crops(pipeline, paths: list[Path]) -> np.ndarray:
    crops = [face.crop for path in paths for face in pipeline.predict(path).faces]
    assert crops, "no faces found to compare on"
    return np.stack(crops)


def test_shipped_files_exist_and_the_classifier_export_is_current(torch_model) -> None:
    """A checkpoint replaced without rerunning tools/export_onnx.py fails here (and is ignored at run time)."""
    for spec in (SHORT_RANGE, FULL_RANGE):
        assert spec.onnx.is_file(), f"{spec.onnx}: run python tools/export_onnx.py"
    onnx, sidecar = export_paths(BUNDLED_MODEL)
    assert onnx.is_file() and sidecar.is_file(), "run python tools/export_onnx.py"
    metadata = json.loads(sidecar.read_text())
    assert metadata["source_sha256"] == sha256_file(BUNDLED_MODEL), (
        "stale export: run python tools/export_onnx.py"
    )
    assert metadata["onnx_sha256"] == sha256_file(onnx)
    exported = exported_model(BUNDLED_MODEL)
    assert exported is not None
    _, config, _ = torch_model
    # Everything the torch loader reads from the checkpoint and the registry, the sidecar says without torch.
    for field in ("name", "input_size", "mean", "std", "threshold", "temperature", "crop_margin", "has_attention",
                  "kinds", "face_policy"):  # fmt: skip
        assert getattr(exported.config, field) == pytest.approx(getattr(config, field)), field


def test_shipped_classifier_equals_torch_on_real_faces(torch_model, shared_data_photos: list[Path]) -> None:
    """Logits, per-kind logits and attention of the shipped ONNX file against the current .pth in torch, 1e-4."""
    from aletheia import DeepfakeDetectorPipeline

    model, config, _ = torch_model
    pipeline = DeepfakeDetectorPipeline()
    assert pipeline.backend == "onnx" and pipeline.classifier.path == export_paths(BUNDLED_MODEL)[0]
    crops = _face_crops(pipeline, [ASTRONAUT, *shared_data_photos])
    # Without the development photos there is one face: a darkened copy gives the constant check a second score.
    crops = np.concatenate([crops, (crops * 0.6).astype(np.uint8)])
    batch = normalise(crops, config.mean, config.std)
    with torch.inference_mode():
        if config.has_attention:
            want, want_attention = (t.numpy() for t in model.forward_with_attention(torch.from_numpy(batch)))
        else:
            want, want_attention = model(torch.from_numpy(batch)).numpy(), None
    got, attention = pipeline.classifier.infer(batch, with_attention=config.has_attention)
    assert got.shape == want.shape == (len(crops), 1 + len(config.kinds))
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    if want_attention is not None:
        np.testing.assert_allclose(attention, want_attention, atol=TOL, rtol=0)
    # Through the pipeline: the same scores as the torch backend for the same crops.
    reference = DeepfakeDetectorPipeline(backend="torch")
    np.testing.assert_allclose(pipeline.score_crops(crops), reference.score_crops(crops), atol=TOL, rtol=0)
    assert np.ptp(pipeline.score_crops(crops)) > 1e-3  # real, different scores: not a constant


@pytest.fixture(scope="module")
def shared_data_photos(request: pytest.FixtureRequest) -> list[Path]:
    """A few development photos when ../shared/data is there; the astronaut alone otherwise."""
    try:
        shared = request.getfixturevalue("shared_data")
    except pytest.skip.Exception:
        return []
    return [shared / "photos" / name for name in ("blazeface/4faces.png", "deepface/couple.jpg")]


def test_stale_export_is_ignored_with_a_warning(tmp_path: Path) -> None:
    onnx, sidecar = export_paths(BUNDLED_MODEL)
    checkpoint = tmp_path / BUNDLED_MODEL.name
    for source in (BUNDLED_MODEL, onnx, sidecar):
        shutil.copy(source, tmp_path / source.name)
    assert exported_model(checkpoint) is not None
    with checkpoint.open("ab") as handle:  # new weights, old export
        handle.write(b"\0")
    with pytest.warns(UserWarning, match="tools/export_onnx.py"):
        assert exported_model(checkpoint) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert exported_model(tmp_path / "missing.pth") is None  # no export at all: nothing to say


def test_normalise_is_the_training_normalisation_bit_for_bit() -> None:
    from aletheia.data.augment import to_tensor

    crops = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    x = (
        torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0
    )  # how inference normalised before, in torch
    for mean, std in (((127 / 255,) * 3, (128 / 255,) * 3), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))):
        before = ((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)).numpy()
        assert np.array_equal(normalise(crops, mean, std), before)
        assert np.array_equal(to_tensor(crops, mean, std).numpy(), before)


TORCH_FREE = textwrap.dedent(
    """
    import sys
    {body}
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "efficientnet_pytorch", "albumentations"))
    print("LOADED", loaded)
    sys.exit(3 if loaded else 0)
    """
)


def _run_torch_free(body: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "ALETHEIA_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-c", TORCH_FREE.format(body=textwrap.dedent(body))],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip


def test_detect_command_imports_no_torch(tmp_path: Path) -> None:
    """`aletheia detect photo.jpg` in a fresh process with an empty cache: finds and scores the face, no torch."""
    proc = _run_torch_free(
        f"""
        from aletheia.cli import main
        code = main(["detect", {str(ASTRONAUT)!r}, "--no-progress", "-o", "out.jsonl"])
        assert code == 0, code
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads((tmp_path / "out.jsonl").read_text())
    assert record["model"] == BUNDLED_MODEL.name and len(record["faces"]) == 1 and 0 < record["score"] < 1
    assert not (tmp_path / "cache").exists()  # nothing exported on the first run


def test_pipeline_and_server_import_no_torch(tmp_path: Path) -> None:
    """The Python API scores a photo, and the server (web app + REST API) answers a photo over HTTP, without torch."""
    proc = _run_torch_free(
        f"""
        import httpx
        from aletheia import DeepfakeDetectorPipeline
        result = DeepfakeDetectorPipeline().predict({str(ASTRONAUT)!r})
        assert len(result.faces) == 1 and 0 < result.score < 1
        from aletheia.serving import BackgroundServer, build_app, load_pipelines
        server = BackgroundServer(build_app(load_pipelines([])))
        url = server.start()
        try:
            with open({str(ASTRONAUT)!r}, "rb") as photo:
                answer = httpx.post(url + "/api/v1/detect", files={{"file": ("a.jpg", photo.read())}}, timeout=120)
            assert answer.status_code == 200, answer.text
            assert abs(answer.json()["score"] - result.score) < 1e-6, (answer.json(), result.score)
            assert httpx.get(url + "/", timeout=60).status_code == 200  # the web app
        finally:
            server.stop()
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_users_checkpoint_still_loads_with_torch(b4_checkpoint: Path) -> None:
    """A .pth given by a user has no export beside it: torch loads it (and exports it to the cache for ONNX)."""
    from aletheia import DeepfakeDetectorPipeline

    assert exported_model(b4_checkpoint) is None
    pipeline = DeepfakeDetectorPipeline(model_checkpoint=b4_checkpoint)
    assert "torch" in sys.modules and pipeline.backend == "onnx"
    assert len(pipeline.predict(load_image(ASTRONAUT)).faces) == 1
