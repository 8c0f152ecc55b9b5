"""The bias report's face-framing check: pre-cropped faces fill more of their crop than faces in whole photos."""

import pandas as pd

from aletheia.data.bias import bias_report, face_framing


def _faces(
    label: str, source: str, picture: int, box: tuple[float, float, float, float], n: int
) -> pd.DataFrame:
    x0, y0, x1, y1 = box
    return pd.DataFrame({
        "path": [f"{source}/{i}.jpg" for i in range(n)], "label": label, "source": source, "method": source,
        "kind": "image", "x0": x0, "y0": y0, "x1": x1, "y1": y1, "width": picture, "height": picture,
        "face_policy": "scale",
    })  # fmt: skip


def test_framing_that_differs_by_class_is_flagged(tmp_path) -> None:
    # Reals pre-cropped (the box fills the picture), fakes found in whole photos.
    faces = pd.concat([
        _faces("real", "cropped-reals", 200, (15, 20, 185, 190), 6),
        _faces("fake", "photo-fakes", 1000, (400, 400, 560, 560), 6),
    ])  # fmt: skip
    framing = face_framing(faces).set_index("source")["median_face_fraction"]
    assert framing["cropped-reals"] > 0.8 and abs(framing["photo-fakes"] - 0.63) < 0.01
    report = bias_report(faces[["path", "label", "source", "method", "kind"]], tmp_path, faces=faces)
    assert any("fill more of the crop in one class" in flag for flag in report["flags"])
    assert any("pre-cropped pictures (cropped-reals)" in flag for flag in report["flags"])
    assert "## Face framing" in (tmp_path / "bias_report.md").read_text()


def test_faces_from_whole_photos_raise_no_framing_flag(tmp_path) -> None:
    faces = pd.concat([
        _faces("real", "photo-reals", 1000, (300, 300, 480, 480), 4),
        _faces("fake", "photo-fakes", 1000, (400, 400, 560, 560), 4),
    ])  # fmt: skip
    report = bias_report(faces[["path", "label", "source", "method", "kind"]], tmp_path, faces=faces)
    assert not [flag for flag in report["flags"] if "crop" in flag]
