"""Prepare a dataset for training: find faces with the pipeline's own detector, crop them exactly as inference does,
and cache the crops on disk with an index of one row per face.

Output folder:
    crops/<item>_<frame>_<face>.png   the crops (PNG: no second round of compression artefacts)
    faces.csv                         one row per face: crop, source path, frame, box, detection score, label, ...
    items.csv                         one row per input: status ok / no_face / error, faces found, message
    prepare_config.json               the settings, so the crops can be reproduced

Resumable: items already in items.csv are skipped (failed ones are retried). Both cores are used (one detector per worker process).
"""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing as mp
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from aletheia.data.index import index_dataset, index_extra_real
from aletheia.faces.extract import FaceDetector, FacePolicy, crop_face
from aletheia.io import InputError, load_image

FACE_COLUMNS = [
    "crop", "path", "frame", "face", "x0", "y0", "x1", "y1", "detection_score",
    "label", "method", "source", "group", "kind", "width", "height",
]  # fmt: skip
ITEM_COLUMNS = ["path", "label", "method", "source", "status", "faces", "message"]


@dataclass
class PrepareConfig:
    """Everything that decides which crops come out; stored beside them."""

    datasets: list[str]
    output: str
    extra_real: list[str] = field(
        default_factory=list
    )  # folders of extra real faces (e.g. to balance classes)
    frames_per_video: int = 32
    face_policy: FacePolicy = "scale"
    size: int = 224
    max_faces: int = 4  # per image or frame, best first: crowds add little and cost a lot
    min_face_size: int | None = None
    # Share of an image's longer side below which faces are not searched for: 0.25 suits pre-cropped face datasets
    # and prepares them about 13x faster (see FaceDetector); None searches every input for small faces too.
    min_face_fraction: float | None = None
    workers: int = 2
    limit: int | None = None  # at most this many inputs (quick trials)


def build_index(config: PrepareConfig) -> pd.DataFrame:
    """All inputs to prepare: the datasets' indexes plus extra real faces."""
    tables = [index_dataset(d) for d in config.datasets]
    tables += [index_extra_real(Path(folder)) for folder in config.extra_real]
    table = pd.concat(tables, ignore_index=True).drop_duplicates("path")
    if config.limit is not None:
        table = table.sample(n=min(config.limit, len(table)), random_state=0).sort_index()
    return table.reset_index(drop=True)


# -- worker side -------------------------------------------------------------------------------------------------

_detector: FaceDetector | None = None
_config: PrepareConfig | None = None


def _init_worker(config: PrepareConfig) -> None:
    import torch

    global _detector, _config
    torch.set_num_threads(1)  # one process per core does better than two threads per process here
    _config = config
    _detector = FaceDetector(min_face_size=config.min_face_size, min_face_fraction=config.min_face_fraction)


def _frames(item: dict) -> Iterator[tuple[int, np.ndarray]]:
    if item["kind"] == "image":
        yield 0, load_image(item["path"])
        return
    from aletheia.video.decode import sample_frames

    for frame in sample_frames(item["path"], num_frames=_config.frames_per_video):
        yield frame.index, frame.image


def _process(item: dict) -> tuple[dict, list[dict]]:
    """Detect and crop one input; never raises (a bad input is reported in its status)."""
    assert _detector is not None and _config is not None
    stem = hashlib.sha1(item["path"].encode()).hexdigest()[:12]
    crops_dir = Path(_config.output) / "crops"
    rows: list[dict] = []
    status = {k: item[k] for k in ("path", "label", "method", "source")}
    try:
        for frame_index, image in _frames(item):
            height, width = image.shape[:2]
            for number, face in enumerate(_detector.detect(image)[: _config.max_faces]):
                crop = crop_face(image, face.box, _config.face_policy, _config.size)
                name = f"{stem}_{frame_index:05d}_{number}.png"
                Image.fromarray(crop).save(crops_dir / name, compress_level=1)
                x0, y0, x1, y1 = (round(float(v), 1) for v in face.box)
                rows.append(
                    {
                        "crop": f"crops/{name}", "path": item["path"], "frame": frame_index, "face": number,
                        "x0": x0, "y0": y0, "x1": x1, "y1": y1, "detection_score": round(face.detection_score, 4),
                        "label": item["label"], "method": item["method"], "source": item["source"],
                        "group": item["group"], "kind": item["kind"], "width": width, "height": height,
                    }
                )  # fmt: skip
    except InputError as exc:
        return {**status, "status": "error", "faces": 0, "message": str(exc)}, []
    except Exception as exc:  # a batch never dies because one file is bad
        return {
            **status,
            "status": "error",
            "faces": 0,
            "message": f"{item['path']}: {type(exc).__name__}: {exc}",
        }, []
    state = "ok" if rows else "no_face"
    return {**status, "status": state, "faces": len(rows), "message": ""}, rows


# -- driver ------------------------------------------------------------------------------------------------------


def _append_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def check_resumable(config: PrepareConfig) -> None:
    """Refuse to add crops cut with other settings to an existing output folder (the two kinds would mix)."""
    config_path = Path(config.output) / "prepare_config.json"
    if not config_path.exists():
        return
    previous = json.loads(config_path.read_text())
    keys = ("face_policy", "size", "frames_per_video", "max_faces", "min_face_size", "min_face_fraction")
    changed = {k for k in keys if previous.get(k) != asdict(config)[k]}
    if changed:
        raise ValueError(
            f"{config.output} was prepared with other {', '.join(sorted(changed))}; use a new output folder"
        )


def prepare(config: PrepareConfig, progress: bool = True) -> dict:
    """Run (or resume) the preparation; returns a summary with counts per status."""
    check_resumable(config)
    output = Path(config.output)
    (output / "crops").mkdir(parents=True, exist_ok=True)
    config_path = output / "prepare_config.json"
    config_path.write_text(json.dumps(asdict(config), indent=2))

    table = build_index(config)
    items_path, faces_path = output / "items.csv", output / "faces.csv"
    if items_path.exists():
        # Inputs that failed are tried again (the fault may have been fixed); the rest are done.
        items = pd.read_csv(items_path, keep_default_na=False)
        items = items[items["status"] != "error"]
        items.to_csv(items_path, index=False)
        done = set(items["path"])
    else:
        done = set()
    if faces_path.exists():
        # An interrupted run may have written an item's faces but not its status: drop those, it is redone.
        faces = pd.read_csv(faces_path, keep_default_na=False)
        faces[faces["path"].isin(done)].to_csv(faces_path, index=False)
    todo = [r for r in table.to_dict("records") if r["path"] not in done]

    context = mp.get_context("spawn")  # torch and fork do not mix
    with context.Pool(config.workers, initializer=_init_worker, initargs=(config,)) as pool:
        results = pool.imap(_process, todo, chunksize=4)
        for status, rows in tqdm(results, total=len(todo), disable=not progress, unit="item", desc="prepare"):
            if rows:
                _append_csv(faces_path, FACE_COLUMNS, rows)
            _append_csv(items_path, ITEM_COLUMNS, [status])
    return summarise(output)


def summarise(output: Path) -> dict:
    items = pd.read_csv(Path(output) / "items.csv", keep_default_na=False)
    faces_path = Path(output) / "faces.csv"
    faces = pd.read_csv(faces_path) if faces_path.exists() else pd.DataFrame(columns=FACE_COLUMNS)
    return {
        "items": len(items),
        "status": items["status"].value_counts().to_dict(),
        "faces": len(faces),
        "faces_per_label": faces["label"].value_counts().to_dict(),
        "errors": items.loc[items["status"] == "error", "message"].tolist()[:50],
    }


def load_faces(output: str | Path) -> pd.DataFrame:
    """The face index with absolute crop paths."""
    output = Path(output)
    faces = pd.read_csv(output / "faces.csv", keep_default_na=False)
    faces["crop"] = [str(output / c) for c in faces["crop"]]
    settings = json.loads((output / "prepare_config.json").read_text())
    # How the crops were cut, so a face's box can be found inside its crop (self-blending needs it).
    faces["face_policy"], faces["crop_size"] = settings["face_policy"], settings["size"]
    return faces
