"""Where a scan's results go: JSON lines, CSV, a table for people, or Parquet; new, resumed or overwritten.

Every sink takes results a batch at a time and writes each batch whole and flushed before the next one is computed,
so a killed scan keeps every batch it finished. `done` holds the inputs an earlier run already wrote (for
`--resume`), keyed by `input_key`.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import TextIO

FORMATS = ("jsonl", "csv", "table", "parquet")
RESUMABLE = ("jsonl", "csv", "parquet")
CSV_COLUMNS = ("path", "kind", "score", "scores", "label", "threshold", "model", "n_faces", "faces", "error")
# Per-kind scores in the table, for models that have them.
KIND_COLUMNS = (("manipulated", "manip."), ("generated", "gen."))


class OutputExists(Exception):
    """The output file exists and neither --resume nor --overwrite was given."""


class OutputUnreadable(Exception):
    """--resume was asked for, but the output file is not one this command wrote."""


def printable(text: str) -> str:
    """A file name that is not UTF-8 (kept by Python as lone surrogates) with its odd bytes shown as \\xNN."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def input_key(path: str) -> str:
    """What identifies an input across runs: its absolute path, as every format can store it."""
    return printable(os.path.abspath(path))


def existing_outputs(path: Path, fmt: str) -> list[Path]:
    """The files an earlier scan to `path` may have left (the Parquet journal too)."""
    found = [path] if path.exists() else []
    journal = Path(str(path) + ".journal")
    if fmt == "parquet" and journal.exists():
        found.append(journal)
    return found


def check_output(path: Path | None, fmt: str, resume: bool, overwrite: bool) -> None:
    """Refuse, before any work, to write over an earlier scan unless told what to do with it."""
    if path is None:
        if resume:
            raise OutputExists("--resume needs --output: a scan written to standard output cannot be resumed")
        return
    if resume and fmt not in RESUMABLE:
        raise OutputExists(f"--resume works with --format {', '.join(RESUMABLE)}, not {fmt}")
    if path.is_dir():
        raise OutputExists(f"{path} is a folder; --output names a file")
    found = existing_outputs(path, fmt)
    if found and not (resume or overwrite):
        raise OutputExists(
            f"{found[0]} already exists. Add --resume to skip the inputs it already has and append the rest, "
            "or --overwrite to replace it"
        )


def open_sink(
    path: Path | None, fmt: str, *, resume: bool = False, overwrite: bool = False, row_group_size: int = 1000
):
    """A sink for `fmt` at `path` (standard output when None). Call `check_output` first."""
    check_output(path, fmt, resume, overwrite)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for old in existing_outputs(path, fmt):
                old.unlink()
    if fmt == "parquet":
        if path is None:
            raise OutputExists("--format parquet needs --output")
        from aletheia.scan.parquet_sink import ParquetSink

        return ParquetSink(path, row_group_size)
    return TextSink(path, fmt)


class TextSink:
    """JSON lines, CSV or a table, appended line by line; a resumed file is first repaired and read."""

    def __init__(self, path: Path | None, fmt: str) -> None:
        self.path, self.fmt = path, fmt
        self.done: set[str] = set()
        self.models: set[str] = set()
        if path is not None and path.exists():
            self._read_existing(path)
        fresh = path is None or not path.exists() or path.stat().st_size == 0  # (a torn header is cut away)
        self.out: TextIO = sys.stdout if path is None else path.open("a", encoding="utf-8", newline="")
        if fmt == "csv":
            self._csv = csv.DictWriter(self.out, fieldnames=CSV_COLUMNS)
            if fresh:
                self._csv.writeheader()
        elif fmt == "table":
            kinds = " ".join(f"{title:>6}" for _, title in KIND_COLUMNS)
            self.out.write(f"{'label':<24} {'score':>7} {kinds} {'faces':>5}  path / warnings\n")
            self.tally = TableTally()
        self.out.flush()

    def _read_existing(self, path: Path) -> None:
        """Keep the complete records, cut off a last one that a kill left half written, and note their inputs."""
        data = path.read_bytes()
        # csv rows end in \r\n; a \n alone may be inside a quoted field
        end = b"\r\n" if self.fmt == "csv" else b"\n"
        whole = data[: data.rfind(end) + len(end)] if end in data else b""
        if len(whole) < len(data):
            print(
                f"{path}: removed an incomplete last record ({len(data) - len(whole)} bytes)", file=sys.stderr
            )
            with path.open("r+b") as handle:
                handle.truncate(len(whole))
        text = whole.decode("utf-8", "surrogateescape")
        try:
            if self.fmt == "jsonl":
                records = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                records = list(csv.DictReader(text.splitlines(keepends=True)))
                if records and "path" not in records[0]:
                    raise ValueError("no path column")
            for record in records:
                self.done.add(input_key(record["path"]))
                self.models.add(record.get("model") or "")
        except (ValueError, KeyError, TypeError) as exc:
            raise OutputUnreadable(
                f"{path} is not a {self.fmt} file of scan results ({exc}); cannot resume it"
            ) from exc

    def write(self, records: list[dict]) -> None:
        """One batch: every record whole, then one flush."""
        if self.fmt == "jsonl":
            self.out.write("".join(json.dumps(r) + "\n" for r in records))  # JSON escapes what is not UTF-8
        for record in records if self.fmt != "jsonl" else ():
            # In csv and table form a video's people (tracks) stand where a photo's faces do.
            faces = record["faces"] if "faces" in record else record["tracks"]
            record = {k: printable(v) if isinstance(v, str) else v for k, v in record.items()}
            if self.fmt == "csv":
                row = {k: record.get(k) for k in CSV_COLUMNS if k in record}
                row["n_faces"] = len(faces)
                row["faces"] = json.dumps(faces)
                row["scores"] = json.dumps(record["scores"]) if "scores" in record else ""
                self._csv.writerow(row)
            else:
                self.out.write(table_rows(record, faces))
                self.tally.add(record, faces)
        self.out.flush()

    def close(self) -> None:
        if self.fmt == "table":
            self.out.write(self.tally.line() + "\n")
            self.out.flush()
        if self.out is not sys.stdout:
            self.out.close()


def _table_line(label: str, score: float | None, by_kind: dict, count: str, text: str) -> str:
    shown = "-" if score is None else f"{score:.3f}"
    kinds = " ".join(f"{by_kind[k]:>6.3f}" if k in by_kind else f"{'-':>6}" for k, _ in KIND_COLUMNS)
    return f"{label:<24} {shown:>7} {kinds} {count:>5}  {text}".rstrip() + "\n"


def _codes(item: dict) -> str:
    return ", ".join(w["code"] for w in item.get("warnings") or [])


def table_rows(record: dict, faces: list[dict]) -> str:
    """An input's line (its verdict, best score, face count, path, warnings), then a line per face (a video: per
    person) with its own verdict, score, spread and warnings."""
    text = record["path"] + (f"  ({record['error']})" if record["error"] else "")
    if codes := _codes(record):
        text += f"  [{codes}]"
    out = _table_line(record["label"], record["score"], record.get("scores", {}), str(len(faces)), text)
    video = record["kind"] == "video"
    for number, face in enumerate(faces, start=1):
        name = f"  person {face['id']}" if video else f"  face #{number}"
        details = []
        if face.get("spread") is not None:
            details.append(f"spread {face['spread']:.2f}")
        if video:
            details.append(f"in {len(face['frames'])} frames")
        if codes := _codes(face):
            details.append(f"[{codes}]")
        label = f"{name[2:]} {face.get('label', '')}".strip()
        out += _table_line("  " + label, face["score"], face.get("scores", {}), "", "  ".join(details))
    return out


class TableTally:
    """The table's last line: how many inputs were flagged fake, of how many, and how many faces (people)."""

    def __init__(self) -> None:
        self.inputs = self.flagged = self.inconclusive = self.faces = self.faces_flagged = 0

    def add(self, record: dict, faces: list[dict]) -> None:
        self.inputs += 1
        self.flagged += record["label"] == "fake"
        self.inconclusive += record["label"] == "inconclusive"
        self.faces += len(faces)
        self.faces_flagged += sum(face.get("label") == "fake" for face in faces)

    def line(self) -> str:
        return (
            f"{self.flagged} of {self.inputs} inputs flagged fake, {self.inconclusive} inconclusive; "
            f"{self.faces_flagged} of {self.faces} faces (in videos: people) flagged fake"
        )
