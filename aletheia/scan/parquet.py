"""Scan results as Parquet: one row per input and per face, in row groups appended to one file as the scan goes.

Columns (a face's fields are null on the one row of an input without faces):

    path, kind ("image" or "video"), score, scores_<kind>..., label, threshold, model, error, n_faces,
    frame, frame_index, frame_time (videos: which sampled frame the row is),
    face, face_box, face_detection_score, face_score, face_scores_<kind>..., face_keypoints, face_track (videos),
    tracks (videos: the people as JSON, the `tracks` field of the JSON line)

`scores_<kind>` are the per-kind probabilities (the JSON `scores` dict) for models that score kinds of fake; they
are null for one-output models. A video has a row per sampled frame and face (a frame without faces: one row with
null face fields). `read_records(path)` turns the rows back into exactly the JSON lines `--format jsonl` writes.

Kill safety: rows first go, a batch at a time, to a journal beside the file (`OUT.journal`, whole JSON lines) and
every `row_group_size` inputs they become one row group. The journal's first line records where the file's row
groups end and its footer at that point, so a run killed while appending a row group is repaired on `--resume`
by cutting the file back there; the journal's records are then written again. At the end of a scan the journal
is removed. Appending a row group is done as `thrift.shift_footer` describes.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from aletheia.scan.thrift import shift_footer

MAGIC = b"PAR1"
JOURNAL_SUFFIX = ".journal"


def known_kinds() -> tuple[str, ...]:
    """Every kind of fake any registered model scores, in registration order (the scores_<kind> columns)."""
    from aletheia.models.registry import get_config, list_models

    kinds: list[str] = []
    for name in list_models():
        kinds += [k for k in get_config(name).kinds if k not in kinds]
    return tuple(kinds)


def schema(kinds: tuple[str, ...]) -> pa.Schema:
    f64, i32, text = pa.float64(), pa.int32(), pa.string()
    return pa.schema(
        [("path", text), ("kind", text), ("score", f64)]
        + [(f"scores_{k}", f64) for k in kinds]
        + [("label", text), ("threshold", f64), ("model", text), ("error", text), ("n_faces", i32)]
        + [("frame", i32), ("frame_index", i32), ("frame_time", f64)]
        + [("face", i32), ("face_box", pa.list_(f64)), ("face_detection_score", f64), ("face_score", f64)]
        + [(f"face_scores_{k}", f64) for k in kinds]
        + [("face_keypoints", pa.list_(pa.list_(f64))), ("face_track", i32), ("tracks", text)]
        + [("face_label", text), ("face_spread", f64), ("face_extra", text), ("extra", text)]
    )


# Record keys with columns of their own; the others (explanation, band, tta, warnings, provenance, ...) travel as
# JSON text in `extra` (per input) and `face_extra` (per face), so every JSON field survives a Parquet scan.
_INPUT_KEYS = {
    "path",
    "kind",
    "score",
    "scores",
    "label",
    "threshold",
    "model",
    "error",
    "faces",
    "frames",
    "tracks",
}
_FACE_KEYS = {"box", "detection_score", "score", "scores", "keypoints", "track", "label", "spread"}


def _extra(item: dict, known: set[str]) -> str | None:
    rest = {k: v for k, v in item.items() if k not in known}
    return json.dumps(rest) if rest else None


def _text(value: str | None) -> str | None:
    """Parquet strings are UTF-8: a file name that is not (lone surrogates in Python) is kept with \\xNN escapes."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def rows(record: dict, kinds: tuple[str, ...]) -> list[dict]:
    """The rows of one JSON record (`result.to_json()`)."""
    unknown = set(record.get("scores", {})) - set(kinds)
    if unknown:
        raise ValueError(f"scores for unknown kinds of fake {sorted(unknown)}; known: {list(kinds)}")
    video = record["kind"] == "video"
    base = {
        "path": _text(record["path"]),
        "kind": record["kind"],
        "score": record["score"],
        **{f"scores_{k}": record.get("scores", {}).get(k) for k in kinds},
        "label": record["label"],
        "threshold": record["threshold"],
        "model": _text(record["model"]),
        "error": _text(record["error"]),
        "n_faces": len(record["tracks"] if video else record["faces"]),
        "tracks": json.dumps(record["tracks"]) if video else None,
        "extra": _extra(record, _INPUT_KEYS),
    }

    def face_row(extra: dict, number: int | None, face: dict | None) -> dict:
        row = {**base, **extra, "face": number}
        if face is not None:
            row |= {
                "face_box": face["box"],
                "face_detection_score": face["detection_score"],
                "face_score": face["score"],
                **{f"face_scores_{k}": face.get("scores", {}).get(k) for k in kinds},
                "face_keypoints": face["keypoints"],
                "face_track": face.get("track"),
                "face_label": face.get("label"),
                "face_spread": face.get("spread"),
                "face_extra": _extra(face, _FACE_KEYS),
            }
        return row

    if not video:
        return [face_row({}, n, f) for n, f in enumerate(record["faces"])] or [face_row({}, None, None)]
    out = []
    for position, frame in enumerate(record["frames"]):
        where = {"frame": position, "frame_index": frame["index"], "frame_time": frame["time"]}
        out += [face_row(where, n, f) for n, f in enumerate(frame["faces"])] or [face_row(where, None, None)]
    return out or [face_row({}, None, None)]


def table(records: Iterable[dict], kinds: tuple[str, ...]) -> pa.Table:
    return pa.Table.from_pylist(
        [row for record in records for row in rows(record, kinds)], schema=schema(kinds)
    )


def read_records(source: str | Path | pa.Table) -> list[dict]:
    """The JSON records (as `aletheia detect --format jsonl` writes them) back from a Parquet scan's rows."""
    data = source if isinstance(source, pa.Table) else pq.read_table(source)
    kinds = tuple(n[len("scores_") :] for n in data.column_names if n.startswith("scores_"))
    records: list[dict] = []
    for row in data.to_pylist():
        video = row["kind"] == "video"
        if row["face"] in (None, 0) and row["frame"] in (None, 0):  # an input's first row
            record = {"path": row["path"], "kind": row["kind"], "score": row["score"]}
            scores = {k: row[f"scores_{k}"] for k in kinds if row[f"scores_{k}"] is not None}
            if scores:
                record["scores"] = scores
            record |= {"label": row["label"], "threshold": row["threshold"], "model": row["model"]}
            if video:
                record |= {"frames": [], "tracks": json.loads(row["tracks"])}
            else:
                record["faces"] = []
            record["error"] = row["error"]
            record |= json.loads(row["extra"]) if row.get("extra") else {}
            records.append(record)
        if video and row["frame"] is not None and row["face"] in (None, 0):  # a frame's first row
            records[-1]["frames"].append(
                {"index": row["frame_index"], "time": row["frame_time"], "faces": []}
            )
        if row["face"] is None:
            continue
        face = {
            "box": row["face_box"],
            "detection_score": row["face_detection_score"],
            "score": row["face_score"],
        }
        face_scores = {k: row[f"face_scores_{k}"] for k in kinds if row[f"face_scores_{k}"] is not None}
        if face_scores:
            face["scores"] = face_scores
        if row.get("face_label") is not None:
            face |= {"label": row["face_label"], "spread": row["face_spread"]}
        face |= json.loads(row["face_extra"]) if row.get("face_extra") else {}
        face["keypoints"] = row["face_keypoints"]
        if video:
            face["track"] = row["face_track"]
            records[-1]["frames"][-1]["faces"].append(face)
        else:
            records[-1]["faces"].append(face)
    return records


def _row_group_bytes(data: pa.Table) -> tuple[bytes, bytes]:
    """(the column chunks, the footer) of `data` written as one row group of a Parquet file of its own."""
    buffer = io.BytesIO()
    pq.write_table(data, buffer, row_group_size=max(1, data.num_rows))
    raw = buffer.getvalue()
    footer_size = int.from_bytes(raw[-8:-4], "little")
    footer_start = len(raw) - 8 - footer_size
    return raw[len(MAGIC) : footer_start], raw[footer_start:-8]


def _tail(meta: pq.FileMetaData) -> bytes:
    """The bytes that end a Parquet file with this footer: footer, its length, magic."""
    buffer = io.BytesIO()
    meta.write_metadata_file(buffer)
    return buffer.getvalue()[len(MAGIC) :]


def _meta_from_tail(tail: bytes) -> pq.FileMetaData:
    return pq.read_metadata(io.BytesIO(MAGIC + tail))


class ParquetAppender:
    """One Parquet file that grows by row groups and is a valid file after each one (see the module notes)."""

    def __init__(self, path: Path, kinds: tuple[str, ...], state: dict | None) -> None:
        self.path, self.kinds = path, kinds
        self.data_end: int | None = None
        self.meta: pq.FileMetaData | None = None
        if state is not None:  # a scan that was interrupted: cut the file back to its last complete state
            self.data_end = state["data_end"]
            tail = base64.b64decode(state["tail"])
            with path.open("r+b") as handle:
                handle.seek(self.data_end)
                handle.write(tail)
                handle.truncate()
            self.meta = _meta_from_tail(tail)
        elif path.is_file() and path.stat().st_size:
            self.meta = pq.read_metadata(path)  # a complete file from an earlier scan that finished
            size = path.stat().st_size
            with path.open("rb") as handle:
                handle.seek(size - 8)
                footer_size = int.from_bytes(handle.read(4), "little")
            self.data_end = size - 8 - footer_size
        if self.meta is not None and self.meta.schema.to_arrow_schema() != schema(kinds):
            raise ValueError(f"{path}: its columns differ from this version's; write to a new file")

    def state(self) -> dict | None:
        if self.meta is None:
            return None
        return {"data_end": self.data_end, "tail": base64.b64encode(_tail(self.meta)).decode("ascii")}

    def append(self, records: list[dict]) -> None:
        if not records:
            return
        chunks, footer = _row_group_bytes(table(records, self.kinds))
        mode = "r+b" if self.meta is not None else "wb"
        with self.path.open(mode) as handle:
            if self.meta is None:
                handle.write(MAGIC)
                self.data_end = len(MAGIC)
            start = self.data_end
            # Offsets in `footer` count from the start of the small file, whose chunks began after its magic.
            moved = shift_footer(footer, start - len(MAGIC), self.meta.num_row_groups if self.meta else 0)
            new_meta = _meta_from_tail(moved + len(moved).to_bytes(4, "little") + MAGIC)
            if self.meta is None:
                meta = new_meta
            else:
                meta = self.meta
                meta.append_row_groups(new_meta)
            handle.seek(start)
            handle.write(chunks)
            handle.write(_tail(meta))
            handle.truncate()
            handle.flush()
            os.fsync(handle.fileno())
        self.data_end, self.meta = start + len(chunks), meta

    def append_empty(self) -> None:
        """A file with the columns and no rows (a scan that wrote nothing)."""
        pq.write_table(table([], self.kinds), self.path)
        self.meta = pq.read_metadata(self.path)
        self.data_end = self.path.stat().st_size - 8 - int.from_bytes(self.path.read_bytes()[-8:-4], "little")

    def paths_and_models(self) -> tuple[list[str], set[str]]:
        """The inputs in the file (each once) and the models that scored them."""
        if self.meta is None or self.meta.num_rows == 0:
            return [], set()
        data = pq.read_table(self.path, columns=["path", "model"])
        return data.column("path").unique().to_pylist(), set(data.column("model").unique().to_pylist())
