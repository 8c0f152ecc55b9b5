"""Run prepare / train / evaluate as MLRun runs, and keep a record of every run that `aletheia runs` can list.

Without MLRUN_DBPATH, MLRun executes the handlers in this process and its run database is a stub that remembers
nothing, so each finished run's record (parameters, results, artifact locations) is written to
`<root>/runs/<uid>.yaml`. With MLRUN_DBPATH pointing at an MLRun service the same calls submit the handlers as
`job` functions there (`ALETHEIA_MLRUN_IMAGE` names the image with aletheia installed), and the service keeps runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

HANDLERS_FILE = Path(__file__).with_name("mlrun_functions.py")
PROJECT = "aletheia"
STRATEGIES = ("grid", "random", "list")


def remote() -> bool:
    # A local run sets MLRUN_DBPATH to "./" for its own use, so only a URL means a service.
    return os.environ.get("MLRUN_DBPATH", "").startswith(("http://", "https://"))


@dataclass
class RunRecord:
    uid: str
    name: str
    state: str
    start: str
    parameters: dict
    results: dict
    artifacts: dict
    output_path: str
    error: str | None = None

    @classmethod
    def from_run(cls, run) -> RunRecord:
        status = run.status
        return cls(
            uid=run.metadata.uid,
            name=run.metadata.name,
            state=status.state,
            start=str(status.start_time),
            parameters=dict(run.spec.parameters or {}),
            results=dict(status.results or {}),
            artifacts=dict(getattr(status, "artifact_uris", None) or {}),
            output_path=str(run.spec.output_path),
            error=getattr(status, "error", None),
        )


def run_handler(handler: str, params: dict, root: str | Path, *, name: str | None = None, hyper_params: dict | None = None,
                selector: str = "min.val_loss", strategy: str = "grid", max_iterations: int | None = None) -> RunRecord:  # fmt: skip
    """Run one handler of mlrun_functions.py as an MLRun run (a grid when `hyper_params`) and record it."""
    import mlrun

    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
    root = Path(root)
    function = mlrun.code_to_function(
        name=name or handler, project=PROJECT, filename=str(HANDLERS_FILE), handler=handler, kind="job",
        image=os.environ.get("ALETHEIA_MLRUN_IMAGE", "mlrun/mlrun"),
    )  # fmt: skip
    task = mlrun.new_task(name=name or handler, params=params)
    if hyper_params:
        options = {"max_iterations": max_iterations} if max_iterations else {}
        task.with_hyper_params(hyper_params, selector=selector, strategy=strategy, **options)
    run = function.run(task, local=not remote(), output_path=str((root / "artifacts").resolve()))
    record = RunRecord.from_run(run)
    if record.state != "completed":
        raise RuntimeError(f"MLRun run {record.name} ({record.uid}) ended {record.state}: {record.error}")
    save_record(record, root)
    return record


def save_record(record: RunRecord, root: str | Path) -> Path:
    runs = Path(root) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    path = runs / f"{record.uid}.yaml"
    path.write_text(yaml.safe_dump(record.__dict__, sort_keys=False, default_flow_style=False))
    return path


def list_records(root: str | Path) -> list[RunRecord]:
    """Every recorded run under root, oldest first."""
    runs = Path(root) / "runs"
    records = (
        [RunRecord(**yaml.safe_load(p.read_text())) for p in runs.glob("*.yaml")] if runs.is_dir() else []
    )
    return sorted(records, key=lambda r: r.start)


def find_record(root: str | Path, uid_prefix: str) -> RunRecord:
    matches = [r for r in list_records(root) if r.uid.startswith(uid_prefix)]
    if len(matches) != 1:
        raise KeyError(f"{len(matches)} runs under {root} match {uid_prefix!r}; give more of the run id")
    return matches[0]
