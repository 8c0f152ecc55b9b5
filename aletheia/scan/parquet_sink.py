"""The Parquet sink: batches go to a journal of whole JSON lines, every `row_group_size` inputs to a row group.

See `aletheia.scan.parquet` for the columns and why a journal: a Parquet file is only readable once its footer is
written, so rows are first made safe in the journal and then appended to the file a row group at a time.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from aletheia.scan.parquet import JOURNAL_SUFFIX, ParquetAppender, known_kinds
from aletheia.scan.sinks import OutputUnreadable, input_key

STATE_KEY = "aletheia_parquet_state"


class ParquetSink:
    def __init__(self, path: Path, row_group_size: int = 1000) -> None:
        self.path, self.row_group_size = path, max(1, int(row_group_size))
        self.journal_path = Path(str(path) + JOURNAL_SUFFIX)
        state, pending = self._read_journal()
        try:
            self.file = ParquetAppender(path, known_kinds(), state)
        except (OSError, ValueError) as exc:
            raise OutputUnreadable(
                f"{path} is not a Parquet file of scan results ({exc}); cannot resume it"
            ) from exc
        paths, self.models = self.file.paths_and_models()
        self.done: set[str] = {input_key(p) for p in paths}
        # Records a killed run journaled but had not yet put in a row group (some may be in the file already,
        # when the kill came between writing a row group and clearing the journal).
        self.pending = [r for r in pending if input_key(r["path"]) not in self.done]
        self.done |= {input_key(r["path"]) for r in self.pending}
        self.models |= {r["model"] for r in self.pending}
        self._start_journal()

    def _read_journal(self) -> tuple[dict | None, list[dict]]:
        if not self.journal_path.exists():
            return None, []
        lines = self.journal_path.read_bytes().split(b"\n")
        if lines[-1]:
            print(f"{self.journal_path}: removed an incomplete last record", file=sys.stderr)
        try:
            entries = [json.loads(line) for line in lines[:-1] if line.strip()]
        except ValueError as exc:
            raise OutputUnreadable(
                f"{self.journal_path} is not a scan journal ({exc}); cannot resume"
            ) from exc
        state = entries[0].get(STATE_KEY) if entries and STATE_KEY in entries[0] else None
        return state, [e for e in entries if STATE_KEY not in e]

    def _start_journal(self) -> None:
        """A new journal (atomically): the file's state now, then the records waiting for the next row group."""
        temporary = Path(str(self.journal_path) + ".tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            handle.write(json.dumps({STATE_KEY: self.file.state()}) + "\n")
            handle.write("".join(json.dumps(r) + "\n" for r in self.pending))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.journal_path)
        self.journal = self.journal_path.open("a", encoding="utf-8")

    def write(self, records: list[dict]) -> None:
        self.journal.write("".join(json.dumps(r) + "\n" for r in records))
        self.journal.flush()
        self.pending += records
        if len(self.pending) >= self.row_group_size:
            self._commit()

    def _commit(self) -> None:
        self.file.append(self.pending)
        self.pending = []
        self.journal.close()
        self._start_journal()

    def close(self) -> None:
        if self.pending or self.file.meta is None:
            if self.file.meta is None and not self.pending:
                self.file.append_empty()
            else:
                self.file.append(self.pending)
            self.pending = []
        self.journal.close()
        self.journal_path.unlink(missing_ok=True)
