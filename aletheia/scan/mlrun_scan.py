"""The scan as an MLRun handler, and a way to run it: in this process, or as an MLRun `dask` function on a service.

    from aletheia.scan.mlrun_scan import run_scan_function
    run = run_scan_function({"paths": ["/data/archive"], "output": "/data/scan.parquet", "format": "parquet"},
                            root="runs", replicas=4)

* Without MLRUN_DBPATH (or with a local path in it) the handler runs here as an MLRun `job` run (MLRun's local run
  database is a stub: results and the run record are written under `root`, as `aletheia.training.tracking` does
  for training). The scan is serial, or on `params["dask"]` (`local:N` or a scheduler address) when given.
* With MLRUN_DBPATH=http(s)://... naming an MLRun service, the same handler is submitted as an MLRun `dask`
  function: MLRun starts a Dask cluster of `replicas` workers on Kubernetes (image: $ALETHEIA_MLRUN_IMAGE, which must
  have aletheia installed), runs the handler with `context.dask_client` connected to it, and the scan goes out in
  shards to those workers. Paths, the output and any --model file must then be on storage the pods mount.
"""

from __future__ import annotations

import os
from pathlib import Path

HANDLER_FILE = Path(__file__)
FUNCTION_NAME = "aletheia-scan"


def scan(context, paths: list, output: str, format: str = "jsonl", resume: bool = True, model: str | None = None,
         arch: str | None = None, threshold: float | None = None, batch_size: int = 32, assume_face: bool = False,
         frames: int = 32, fps: float | None = None, track_strategy: str = "mean_logit", backend: str = "auto",
         dask: str | None = None, shard_size: int = 32, row_group_size: int = 1000) -> None:  # fmt: skip
    """MLRun handler: scan `paths` into `output` (resumed by default, so a re-run finishes an interrupted one).

    On a Dask cluster when MLRun provides one (`context.dask_client`, a `dask` function) or `dask` names one;
    otherwise in this process. Logs the summary as results and the output file as an artifact."""
    from aletheia.scan import ScanSettings, open_sink, run_scan

    client = getattr(context, "dask_client", None)
    cluster = own_client = None
    threads = None
    if client is None and dask:
        from aletheia.scan.distributed import local_threads, start_client

        own_client, cluster = start_client(dask)
        client = own_client
        threads = local_threads(int(dask.split(":", 1)[1])) if dask.startswith("local:") else None
    settings = ScanSettings(model=model, arch=arch, threshold=threshold, batch_size=batch_size,
                            assume_face=assume_face, frames=frames, fps=fps, track_strategy=track_strategy,
                            backend=backend, threads=threads)  # fmt: skip
    sink = open_sink(Path(output), format, resume=resume, overwrite=not resume, row_group_size=row_group_size)
    try:
        options = {"client": client, "shard_size": shard_size} if client is not None else {}
        summary = run_scan(list(paths), sink, settings, **options)
    finally:
        sink.close()
        if own_client is not None:
            own_client.close()
        if cluster is not None:
            cluster.close()
    for key, value in summary.to_json().items():
        context.log_result(key, value)
    context.log_result("engine", "dask" if client is not None else "serial")
    context.log_artifact("scan_results", local_path=str(output), format=format)
    context.logger.info(f"aletheia scan: {summary.line()}")


def scan_function(
    kind: str = "dask", *, remote_cluster: bool = False, replicas: int = 2, image: str | None = None
):
    """The MLRun function for `scan`: kind "dask" (with `remote_cluster`, MLRun starts the Dask cluster on Kubernetes;
    without, its handler uses the Dask client already made in this process) or "job"."""
    import mlrun

    from aletheia.training.tracking import PROJECT

    function = mlrun.code_to_function(
        name=FUNCTION_NAME, project=PROJECT, filename=str(HANDLER_FILE), handler="scan", kind=kind,
        image=image or os.environ.get("ALETHEIA_MLRUN_IMAGE", "mlrun/mlrun"),
    )  # fmt: skip
    # MLRun's dask runtime loads a handler given by name from the command file.
    function.spec.command = str(HANDLER_FILE)
    if kind == "dask":
        function.spec.remote = remote_cluster
        if remote_cluster:
            function.spec.replicas = function.spec.min_replicas = function.spec.max_replicas = replicas
    return function


def run_scan_function(params: dict, root: str | Path, *, replicas: int = 2, image: str | None = None):
    """Run `scan` with `params` as an MLRun run, recorded under `root/runs` (see the module notes): a `dask`
    function on the MLRun service when MLRUN_DBPATH names one, else a local `job` run."""
    import mlrun

    from aletheia.training.tracking import RunRecord, remote, save_record

    if remote():
        function = scan_function("dask", remote_cluster=True, replicas=replicas, image=image)
    else:
        function = scan_function("job", image=image)
    task = mlrun.new_task(name=FUNCTION_NAME, params=params)
    run = function.run(
        task, handler="scan", local=not remote(), output_path=str((Path(root) / "artifacts").resolve())
    )
    record = RunRecord.from_run(run)
    if record.state != "completed":
        raise RuntimeError(f"MLRun run {record.name} ({record.uid}) ended {record.state}: {record.error}")
    save_record(record, root)
    return record
