"""Bias report: what a model could learn instead of manipulation.

Counts per class, source and method, and per class the confounds that let a model cheat: image size, file format and
JPEG quality, and (given the prepared faces) how much of its crop a face fills. A confound is flagged when the
classes differ on it clearly; the report says so in plain words.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from aletheia.faces.extract import face_fraction, unclipped_face_fraction  # noqa: E402

# The IJG (libjpeg) standard luminance table at quality 50; others are scaled from it.
_IJG_LUMINANCE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.float64)  # fmt: skip


def jpeg_quality(image: Image.Image) -> float | None:
    """Estimate the IJG quality (1-100) a JPEG was saved with from its luminance table; None if not a JPEG."""
    tables = getattr(image, "quantization", None)
    if not tables or 0 not in tables:
        return None
    # PIL returns the table in zigzag order, the standard table above is in natural order: compare the sums.
    scale = 100.0 * float(np.sum(tables[0])) / float(np.sum(_IJG_LUMINANCE))
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return float(np.clip(round(quality), 1, 100))


def describe_files(table: pd.DataFrame) -> pd.DataFrame:
    """Add width, height, format and jpeg_quality columns for the image rows (headers only; fast)."""
    widths, heights, formats, qualities = [], [], [], []
    for path, kind in zip(table["path"], table["kind"], strict=True):
        width = height = quality = None
        fmt = Path(path).suffix.lower().lstrip(".")
        if kind == "image":
            try:
                with Image.open(path) as image:
                    width, height = image.size
                    fmt = (image.format or fmt).lower()
                    quality = jpeg_quality(image)
            except OSError:
                fmt = "unreadable"
        widths.append(width)
        heights.append(height)
        formats.append(fmt)
        qualities.append(quality)
    return table.assign(width=widths, height=heights, format=formats, jpeg_quality=qualities)


def _flags(described: pd.DataFrame) -> list[str]:
    """Plain-words warnings where the classes differ enough for a model to tell them apart without looking at faces."""
    flags = []
    by_label = described.groupby("label")
    counts = by_label.size()
    if len(counts) == 2 and counts.max() > 2 * counts.min():
        flags.append(
            f"class imbalance: {counts.to_dict()} (balance with extra real faces or balanced sampling)"
        )
    formats = pd.crosstab(described["label"], described["format"], normalize="index")
    for fmt in formats.columns:
        share = formats[fmt]
        if len(share) == 2 and abs(share.iloc[0] - share.iloc[1]) > 0.2:
            flags.append(f"format {fmt}: {share.round(2).to_dict()} of each class (re-encode both alike)")
    sizes = by_label["width"].median()
    if len(sizes) == 2 and sizes.notna().all() and sizes.max() > 1.25 * sizes.min():
        flags.append(f"median width differs by class: {sizes.to_dict()} (resize both alike)")
    quality = by_label["jpeg_quality"].median()
    if len(quality) == 2 and quality.notna().all() and abs(quality.iloc[0] - quality.iloc[1]) >= 10:
        flags.append(f"median JPEG quality differs by class: {quality.to_dict()}")
    sources = pd.crosstab(described["source"], described["label"])
    single = [s for s, row in sources.iterrows() if (row > 0).sum() == 1]
    if single:
        flags.append(
            f"{len(single)} of {len(sources)} sources hold only one class ({', '.join(map(str, single[:4]))}"
            f"{'...' if len(single) > 4 else ''}): a model can score well by recognising the source"
        )
    return flags


# A square face found in a whole photo spans this much of its `scale` crop (0.625 at margin 0.2); pre-cropped face
# datasets, whose margin runs off the picture, span more.
WHOLE_PHOTO_FRAMING = unclipped_face_fraction(np.array([0.0, 0.0, 1.0, 1.0]))


def face_framing(faces: pd.DataFrame) -> pd.DataFrame:
    """Per class and source: faces, and the median share of the crop's width the face box spans (`scale` crops)."""
    faces = faces[faces["face_policy"] == "scale"]
    fraction = [
        face_fraction(int(r.height), int(r.width), np.array([r.x0, r.y0, r.x1, r.y1], dtype=np.float64))
        for r in faces.itertuples()
    ]
    return (
        faces.assign(face_fraction=fraction)
        .groupby(["label", "source"])
        .agg(faces=("face_fraction", "size"), median_face_fraction=("face_fraction", "median"))
        .reset_index()
    )


def _framing_flags(framing: pd.DataFrame) -> list[str]:
    flags = []
    weighted = (framing["median_face_fraction"] * framing["faces"]).groupby(framing["label"]).sum()
    by_label = weighted / framing.groupby("label")["faces"].sum()
    if len(by_label) == 2 and abs(by_label.iloc[0] - by_label.iloc[1]) > 0.1:
        flags.append(
            f"faces fill more of the crop in one class: {by_label.round(2).to_dict()} of its width "
            "(pre-cropped faces against faces in whole pictures): a model can learn the framing"
        )
    tight = framing[framing["median_face_fraction"] > WHOLE_PHOTO_FRAMING + 0.1]
    if len(tight):
        share = tight["faces"].sum() / framing["faces"].sum()
        flags.append(
            f"{share:.0%} of faces come from pre-cropped pictures ({', '.join(map(str, tight['source'].unique()[:4]))}"
            f"): they fill more of the crop than a face in a whole photo ({WHOLE_PHOTO_FRAMING:.2g}); "
            "train with faces of both framings (`reframe`) or mix in whole-picture sources"
        )
    return flags


def _bar(ax, series: pd.Series, title: str) -> None:
    series.plot.barh(ax=ax, color="#4c72b0")
    ax.set_title(title)
    ax.set_xlabel("count")


def bias_figures(described: pd.DataFrame) -> dict[str, plt.Figure]:
    figures = {}
    fig, ax = plt.subplots(figsize=(5, 2.5))
    _bar(ax, described["label"].value_counts(), "samples per class")
    figures["class_balance"] = fig

    fig, ax = plt.subplots(figsize=(8, 0.4 * described["method"].nunique() + 1.5))
    _bar(ax, described.groupby(["label", "method"]).size(), "samples per class and method")
    figures["methods"] = fig

    images = described[described["kind"] == "image"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for label, group in images.groupby("label"):
        axes[0].hist(group["width"].dropna(), bins=40, alpha=0.6, label=label)
        quality = group["jpeg_quality"].dropna()
        if len(quality):
            axes[2].hist(quality, bins=range(0, 102, 2), alpha=0.6, label=label)
    axes[0].set_title("image width per class")
    axes[0].set_xlabel("pixels")
    pd.crosstab(images["format"], images["label"], normalize="columns").plot.bar(ax=axes[1])
    axes[1].set_title("file format share per class")
    axes[2].set_title("JPEG quality per class (JPEGs only)")
    for ax in axes[[0, 2]]:
        ax.legend()
    fig.tight_layout()
    figures["confounds"] = fig
    return figures


def bias_report(table: pd.DataFrame, out_dir: str | Path, faces: pd.DataFrame | None = None) -> dict:
    """Write bias_report.md, bias_summary.csv and PNG plots into out_dir; return paths, flags and figures.

    `faces` (the prepared face index, `load_faces`) adds the face-framing check."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    described = describe_files(table)
    summary = (
        described.groupby(["label", "source", "method"])
        .agg(
            count=("path", "size"),
            median_width=("width", "median"),
            median_height=("height", "median"),
            jpeg_share=("format", lambda f: float((f == "jpeg").mean())),
            median_jpeg_quality=("jpeg_quality", "median"),
        )
        .reset_index()
    )
    summary.to_csv(out_dir / "bias_summary.csv", index=False)
    flags = _flags(described)
    framing = face_framing(faces) if faces is not None and len(faces) else None
    if framing is not None:
        flags += _framing_flags(framing)
    figures = bias_figures(described)
    paths = {}
    for name, figure in figures.items():
        paths[name] = out_dir / f"bias_{name}.png"
        figure.savefig(paths[name], dpi=100, bbox_inches="tight")
    lines = [
        "# Bias report",
        "",
        f"{len(described)} samples: {described['label'].value_counts().to_dict()}",
        "",
    ]
    lines += ["## Possible shortcuts", ""] + ([f"- {f}" for f in flags] or ["- none found"]) + [""]
    lines += ["## Per class, source and method", "", summary.to_markdown(index=False, floatfmt=".3g"), ""]
    if framing is not None:
        lines += ["## Face framing (share of the crop's width the face spans)", ""]
        lines += [framing.to_markdown(index=False, floatfmt=".3g"), ""]
    lines += [f"![{name}]({path.name})" for name, path in paths.items()]
    (out_dir / "bias_report.md").write_text("\n".join(lines) + "\n")
    return {
        "flags": flags,
        "figures": figures,
        "paths": {k: str(v) for k, v in paths.items()},
        "summary": summary,
    }
