"""Index a dataset into one table: one row per image or video with its label and where it came from.

Layouts understood (detected in this order):
- a labels CSV: `path,label[,method,source,group]`, paths relative to the CSV's folder;
- FaceForensics++: `original_sequences/youtube/<c>/videos`, `manipulated_sequences/<method>/<c>/videos`;
- DFDC: folders holding `metadata.json` beside their videos;
- a folder tree with `real/` and `fake/` subfolders (the method is the first folder below `fake/`).

Columns: path (absolute), label ("real"/"fake"), method, source, group (who/what the sample shows: the split keeps a
group on one side), kind ("image"/"video").
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from aletheia.io import IMAGE_EXTENSIONS

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".webm", ".mkv"})
COLUMNS = ["path", "label", "method", "source", "group", "kind"]
LABELS = ("real", "fake")


class DatasetError(ValueError):
    """A dataset that cannot be indexed, with what was wrong."""


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return None


def _normalise_label(value: object, where: str) -> str:
    text = str(value).strip().lower()
    mapping = {
        "real": "real",
        "fake": "fake",
        "0": "real",
        "1": "fake",
        "original": "real",
        "manipulated": "fake",
    }
    if text not in mapping:
        raise DatasetError(f"{where}: label {value!r} is neither real/fake nor 0/1")
    return mapping[text]


def index_labels_csv(csv_path: Path) -> pd.DataFrame:
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise DatasetError(
            f"{csv_path}: missing column(s) {', '.join(sorted(missing))}; need path,label[,method,source,group]"
        )
    root = csv_path.parent
    rows = []
    for number, record in enumerate(table.to_dict("records"), start=2):
        path = (root / record["path"]).resolve()
        kind = _kind(path)
        if kind is None:
            continue
        rows.append(
            {
                "path": str(path),
                "label": _normalise_label(record["label"], f"{csv_path}:{number}"),
                "method": record.get("method") or ("original" if record["label"] == "real" else "unknown"),
                "source": record.get("source") or csv_path.parent.name,
                "group": record.get("group") or _default_group(path),
                "kind": kind,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def _default_group(path: Path) -> str:
    """Without identity information every file is its own group; FF++ video names '000_003' group by target id."""
    match = re.fullmatch(r"(?:\w+-)?(\d{3})(?:_(\d{3}))?", path.stem)
    if match:
        return f"ffpp-{match.group(1)}"
    return str(path)


def index_ffpp(root: Path) -> pd.DataFrame:
    rows = []
    for video in sorted(root.glob("original_sequences/*/*/videos/*")):
        if _kind(video) == "video":
            rows.append(
                [
                    str(video.resolve()),
                    "real",
                    "original",
                    f"ffpp-{video.parts[-4]}",
                    f"ffpp-{video.stem}",
                    "video",
                ]
            )
    for video in sorted(root.glob("manipulated_sequences/*/*/videos/*")):
        if _kind(video) == "video":
            method = video.parts[-4]
            target = video.stem.split("_")[0]  # "000_003": the face of 003 put on 000's video
            rows.append([str(video.resolve()), "fake", method, "ffpp", f"ffpp-{target}", "video"])
    return pd.DataFrame(rows, columns=COLUMNS)


def index_dfdc(root: Path) -> pd.DataFrame:
    rows = []
    for metadata_path in sorted(root.rglob("metadata.json")):
        metadata = json.loads(metadata_path.read_text())
        for name, entry in metadata.items():
            video = metadata_path.parent / name
            if not video.is_file():
                continue  # metadata.json lists the whole part; a sample of it may be present
            label = _normalise_label(entry.get("label", ""), f"{metadata_path}:{name}")
            original = entry.get("original") or name
            rows.append(
                [
                    str(video.resolve()),
                    label,
                    "dfdc" if label == "fake" else "original",
                    "dfdc",
                    f"dfdc-{Path(original).stem}",
                    "video",
                ]
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def index_real_fake_folders(root: Path) -> pd.DataFrame:
    rows = []
    for label in LABELS:
        base = root / label
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            kind = _kind(path)
            if kind is None:
                continue
            relative = path.relative_to(base).parts
            method = (
                relative[0]
                if label == "fake" and len(relative) > 1
                else ("original" if label == "real" else "unknown")
            )
            # A file name shared by real/ and fake/ (person3.jpg and fake/blur/person3.jpg) is one subject: one group.
            group = _default_group(path)
            rows.append(
                [
                    str(path.resolve()),
                    label,
                    method,
                    root.name,
                    group if group.startswith("ffpp-") else path.stem,
                    kind,
                ]
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def index_extra_real(folder: Path) -> pd.DataFrame:
    """Every image or video under `folder` as a real sample (extra real faces to balance the classes)."""
    rows = [
        [str(p.resolve()), "real", "original", f"extra-{folder.name}", _default_group(p), _kind(p)]
        for p in sorted(folder.rglob("*"))
        if p.is_file() and _kind(p) is not None
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def index_dataset(location: str | Path) -> pd.DataFrame:
    """Index a labels CSV or a dataset folder in any of the layouts above."""
    location = Path(location)
    if location.is_file() and location.suffix.lower() == ".csv":
        table = index_labels_csv(location)
    elif not location.is_dir():
        raise DatasetError(f"{location}: neither a labels CSV nor a folder")
    elif (location / "labels.csv").is_file():
        table = index_labels_csv(location / "labels.csv")
    elif (location / "original_sequences").is_dir() or (location / "manipulated_sequences").is_dir():
        table = index_ffpp(location)
    elif any(location.rglob("metadata.json")):
        table = index_dfdc(location)
    elif (location / "real").is_dir() or (location / "fake").is_dir():
        table = index_real_fake_folders(location)
    else:
        raise DatasetError(
            f"{location}: no labels.csv, FaceForensics++ layout, DFDC metadata.json or real/ and fake/ folders found"
        )
    if table.empty:
        raise DatasetError(f"{location}: no images or videos found")
    return table.reset_index(drop=True)
