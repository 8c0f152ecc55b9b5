"""Answers people can act on: three-way verdicts, stable scores (test-time augmentation), warnings, provenance and
reports, through the library and the installed command. Nothing here depends on the bundled model's score values."""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import aletheia
from aletheia import DeepfakeDetectorPipeline
from aletheia.caveats import face_caveats
from aletheia.io import load_image
from aletheia.models.checkpoints import CheckpointError
from aletheia.models.loader import DEFAULT_MODEL
from aletheia.provenance import input_facts
from aletheia.results import DEFAULT_BAND_LOGIT, DecisionRule, combine
from aletheia.training.calibrate import choose_band

ASTRONAUT = Path(__file__).resolve().parent.parent / "examples" / "astronaut.jpg"
ALETHEIA = Path(sys.executable).parent / "aletheia"


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


@pytest.fixture(scope="module")
def lite() -> DeepfakeDetectorPipeline:
    if not DEFAULT_MODEL.is_file():
        pytest.skip("no default model bundled in this checkout")
    return DeepfakeDetectorPipeline()


def test_the_band_moves_with_the_threshold_and_a_spread_overrides_it() -> None:
    rule = DecisionRule(0.7, band=(0.6, 0.8), max_spread=0.2)
    assert rule.band_at(0.7) == pytest.approx((0.6, 0.8))
    low, high = rule.band_at(0.5)  # the same distances in logit space around the new threshold
    assert _logit(low) == pytest.approx(_logit(0.6) - _logit(0.7)) and _logit(high) == pytest.approx(
        _logit(0.8) - _logit(0.7)
    )
    assert [rule.judge(s, 0.7) for s in (0.85, 0.8, 0.7, 0.6, 0.55)] == [
        "fake", "fake", "inconclusive", "inconclusive", "real",
    ]  # fmt: skip
    assert rule.judge(0.95, 0.7, spread=0.3) == "inconclusive" and rule.judge(0.95, 0.7, spread=0.1) == "fake"
    default = DecisionRule(0.5)
    assert default.default_band and default.band_at(0.5) == pytest.approx(
        (1 / (1 + math.exp(DEFAULT_BAND_LOGIT)), 1 / (1 + math.exp(-DEFAULT_BAND_LOGIT)))
    )
    assert rule.band_at(0.0) == (0.0, 0.0) and rule.judge(0.0, 0.0) == "fake"
    assert combine(None, ["real", "inconclusive", "fake"]) == "fake"
    assert combine(None, ["real", "inconclusive"]) == "inconclusive"
    assert (combine(None, ["real"]), combine(None, []), combine("bad", ["fake"])) == (
        "real",
        "no_face",
        "error",
    )


def test_calibration_picks_a_band_that_leaves_the_decided_faces_right() -> None:
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(600, int), np.ones(200, int)]
    scores = 1 / (1 + np.exp(-(rng.normal(0, 1.5, 800) + 3.0 * labels - 1.0)))
    chosen = choose_band(scores, labels, threshold=0.6, target=0.95)
    low, high = chosen["band"]
    assert chosen["target_met"] and low <= 0.6 <= high
    decided = (scores < low) | (scores >= high)
    called_fake = scores >= high
    balanced = 0.5 * (
        (~called_fake)[decided & (labels == 0)].mean() + called_fake[decided & (labels == 1)].mean()
    )
    assert balanced >= 0.95 and balanced == pytest.approx(chosen["balanced_accuracy_outside"])
    assert chosen["share_inconclusive"] == pytest.approx(1 - decided.mean())
    looser = choose_band(scores, labels, threshold=0.6, target=0.85)
    assert (
        looser["share_inconclusive"] < chosen["share_inconclusive"]
    )  # an easier target needs a narrower band
    # A fake below every real and a real above every fake: no band leaves only right calls outside it.
    odd_scores, odd_labels = np.r_[scores, 0.0001, 0.9999], np.r_[labels, 1, 0]
    impossible = choose_band(odd_scores, odd_labels, threshold=0.6, target=1.0)
    assert not impossible["target_met"] and impossible["share_inconclusive"] <= 0.5


class _CountingClassifier:
    """Wraps the real classifier to count its forward passes and their batch sizes."""

    def __init__(self, inner: object) -> None:
        self.inner, self.batches = inner, []

    def infer(self, batch: np.ndarray, with_attention: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        self.batches.append(len(batch))
        return self.inner.infer(batch, with_attention)


def test_mirror_augmentation_averages_logits_in_one_pass_and_reports_the_spread(lite) -> None:
    face = lite.predict(ASTRONAUT).faces[0].crop
    crops = np.stack([face, np.asarray(Image.fromarray(face).rotate(10))])
    plain = lite.with_tta("none")
    assert (
        plain.tta == "none" and lite.tta == "mirror" and plain.classifier is lite.classifier
    )  # shared model
    original, mirrored = plain.classify(crops), plain.classify(np.ascontiguousarray(crops[:, :, ::-1]))
    counting = _CountingClassifier(lite.classifier)
    lite.classifier = counting
    try:
        both = lite.classify(crops)
    finally:
        lite.classifier = counting.inner
    assert counting.batches == [4], "each face and its mirror image go through the classifier together"
    np.testing.assert_allclose(both.logits, (original.logits + mirrored.logits) / 2, atol=1e-5)
    np.testing.assert_allclose(both.kind_logits, (original.kind_logits + mirrored.kind_logits) / 2, atol=1e-5)
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    np.testing.assert_allclose(
        both.spread, abs(sigmoid(original.logits) - sigmoid(mirrored.logits)), atol=1e-5
    )
    assert original.spread is None
    # The point of it: a mirrored photo gets the same score as the original.
    np.testing.assert_allclose(
        lite.classify(np.ascontiguousarray(crops[:, :, ::-1])).logits, both.logits, atol=1e-5
    )
    with pytest.raises(ValueError, match="mirror_zoom"):
        DeepfakeDetectorPipeline(tta="flip")


def test_a_calibrated_band_and_spread_limit_travel_with_the_checkpoint(lite, tmp_path: Path) -> None:
    saved = torch.load(DEFAULT_MODEL, weights_only=True)
    threshold = float(saved["threshold"])
    band = (round(threshold - 0.1, 3), round(threshold + (1.0 - threshold) / 2, 3))  # above it, below 1
    path = tmp_path / "banded.pth"
    torch.save({**saved, "band": band, "max_spread": 0.1, "tta": "mirror"}, path)
    banded = DeepfakeDetectorPipeline(model_checkpoint=path)
    assert banded.rule == DecisionRule(threshold, band, 0.1) and not banded.rule.default_band
    record = banded.predict(ASTRONAUT).to_json()
    assert record["band"] == [pytest.approx(band[0]), pytest.approx(band[1])]
    assert "default_band" not in [w["code"] for w in record["warnings"]]
    # A model calibrated without a band gets the default one, and says so.
    unbanded = tmp_path / "unbanded.pth"
    torch.save({k: v for k, v in saved.items() if k != "band"}, unbanded)
    record = DeepfakeDetectorPipeline(model_checkpoint=unbanded).predict(ASTRONAUT).to_json()
    assert "default_band" in [w["code"] for w in record["warnings"]]
    for bad, message in (({"band": (threshold + 0.01, 0.99)}, "band"), ({"tta": "sideways"}, "tta"),
                         ({"max_spread": 0.0}, "max_spread")):  # fmt: skip
        broken = tmp_path / "broken.pth"
        torch.save({**saved, **bad}, broken)
        with pytest.raises(CheckpointError, match=message):
            DeepfakeDetectorPipeline(model_checkpoint=broken)


def test_provenance_names_the_version_the_model_and_input_hashes_and_the_time(lite) -> None:
    data = ASTRONAUT.read_bytes()
    record = lite.predict(ASTRONAUT).to_json()["provenance"]
    assert record["aletheia_version"] == aletheia.__version__
    assert (
        record["model_sha256"] == hashlib.sha256(DEFAULT_MODEL.read_bytes()).hexdigest() == lite.model_sha256
    )
    assert record["input_sha256"] == hashlib.sha256(data).hexdigest()
    created = datetime.strptime(record["created"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - created).total_seconds()) < 600
    assert lite.predict(data).to_json()["provenance"]["input_sha256"] == record["input_sha256"]
    array = load_image(ASTRONAUT)
    untouched = array.copy()
    pixels = lite.predict(array).to_json()["provenance"]["input_sha256"]
    # An array has no file: its shape and pixels are hashed (beside the face search), and it is left as it was.
    assert pixels == hashlib.sha256(repr(array.shape).encode() + untouched.tobytes()).hexdigest()
    assert pixels != record["input_sha256"] and np.array_equal(array, untouched)
    broken = next(iter(lite.predict_many([Path("/nonexistent/photo.jpg")])))
    assert broken.label == "error" and broken.to_json()["provenance"]["input_sha256"] is None


def _jpeg(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def test_warnings_for_compression_small_faces_portraits_and_faces_at_the_edge(lite) -> None:
    image = load_image(ASTRONAUT)
    for quality in (30, 50, 75, 95):
        assert abs(input_facts(_jpeg(image, quality)).jpeg_quality - quality) <= 2
    assert (
        input_facts(ASTRONAUT.read_bytes()).jpeg_quality is not None
        and input_facts(b"\x89PNG").jpeg_quality is None
    )

    def codes(item: dict) -> list[str]:
        return [w["code"] for w in item["warnings"]]

    squeezed = lite.predict(_jpeg(image, 30)).to_json()
    assert "heavy_compression" in codes(squeezed) and "heavy_compression" not in codes(
        lite.predict(ASTRONAUT).to_json()
    )
    small = lite.predict(np.asarray(Image.fromarray(image).resize((160, 160)))).to_json()
    assert (
        "small_image" in codes(small)
        and all("small_face" in codes(f) for f in small["faces"])
        and small["faces"]
    )
    close_up = lite.predict(image[40:220, 140:310]).to_json()  # the face fills the frame
    assert close_up["faces"] and "portrait" in codes(close_up["faces"][0])
    assert "portrait" not in codes(lite.predict(ASTRONAUT).to_json()["faces"][0])
    box = np.array([0.0, 50.0, 100.0, 150.0])
    assert "face_at_edge" in [c.code for c in face_caveats(box, None, 400, 300)]
    assert "face_at_edge" not in [c.code for c in face_caveats(box + [10, 0, 10, 0], None, 400, 300)]
    blurred = np.asarray(
        Image.fromarray(image[60:200, 160:300]).resize((224, 224)).resize((24, 24)).resize((224, 224))
    )
    assert "blurred_face" in [c.code for c in face_caveats(box + 10, blurred, 400, 300)]
    for warning in [w for item in (squeezed, small, close_up) for w in item["warnings"]]:
        assert re.fullmatch(r"[a-z_]+", warning["code"]) and warning["message"].endswith(".")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ALETHEIA), *args], capture_output=True, text=True, timeout=600)


def test_the_command_prints_per_face_rows_a_flagged_summary_and_obeys_tta(lite, tmp_path: Path) -> None:
    small = tmp_path / "small.png"
    Image.fromarray(load_image(ASTRONAUT)).resize((160, 160)).save(small)
    table = _run("detect", str(ASTRONAUT), str(small), "--format", "table", "--no-progress")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    labels = "fake|real|inconclusive"
    assert re.match(rf"({labels})\s+\d\.\d{{3}}\s+-\s+-\s+1\s+.*astronaut\.jpg", lines[1]) or lite.kinds
    assert re.match(rf"\s+face #1 ({labels})\s+\d\.\d{{3}}.*spread \d\.\d\d", lines[2]), lines[2]
    assert "small_image" in lines[3] and "small_face" in table.stdout
    assert re.fullmatch(r"\d of 2 inputs flagged fake, \d inconclusive; \d of \d faces .*", lines[-1]), lines[
        -1
    ]
    plain = _run("detect", str(ASTRONAUT), "--tta", "none", "--no-progress")
    (record,) = [json.loads(line) for line in plain.stdout.splitlines()]
    assert record["tta"] == "none" and record["faces"][0]["spread"] is None
    assert "no_augmentation" in [w["code"] for w in record["warnings"]]
    assert record["label"] in ("fake", "real", "inconclusive") and record["explanation"]


def test_report_is_one_self_contained_printable_page(lite, tmp_path: Path) -> None:
    from tests.test_video import _moving_astronaut, write_video

    clip = tmp_path / "walk.mp4"
    write_video(clip, _moving_astronaut(count=6), fps=4)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(ASTRONAUT.read_bytes()[:3000])
    out = tmp_path / "out" / "report.html"
    proc = _run("report", str(ASTRONAUT), str(clip), str(broken), "--frames", "4", "--output", str(out))
    assert proc.returncode == 1 and "broken.jpg" in proc.stderr  # one input failed, and says so
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "@media print" in page
    # Nothing is fetched from elsewhere: no external sources, links, scripts or style imports.
    assert not re.search(r"""(src|href)=["']?(https?:)?//|@import|url\(|<script""", page)
    assert (
        page.count("data:image/jpeg;base64,") >= 2 and "data:image/png;base64," in page
    )  # photo, crop, timeline
    astronaut = lite.predict(ASTRONAUT).to_json()
    for text in (astronaut["provenance"]["model_sha256"], astronaut["provenance"]["input_sha256"],
                 "astronaut.jpg", "walk.mp4", "corrupt or truncated", "person", "of 3 inputs flagged fake"):  # fmt: skip
        assert text in page, text
    assert astronaut["explanation"] in page.replace("&#x27;", "'")
    card = (DEFAULT_MODEL.parent / "MODEL_CARD.md").read_text()
    if "## Known failure modes" in card:
        assert "Known limits of this model (from its model card)" in page
