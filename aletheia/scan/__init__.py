"""Scans at scale: resumable scans of many files, to JSON lines, CSV or Parquet, here or on a Dask cluster.

    from aletheia.scan import ScanSettings, open_sink, run_scan
    sink = open_sink(Path("out.jsonl"), "jsonl", resume=True)
    try:
        summary = run_scan(["/archive"], sink, ScanSettings())
    finally:
        sink.close()
    print(summary.line())

`aletheia detect` is a thin layer over this package. `aletheia.scan.distributed` runs the same scan on a Dask
cluster, `aletheia.scan.mlrun_scan` as an MLRun run (a `dask` function when MLRUN_DBPATH names an MLRun service).
"""

from aletheia.scan.engine import (
    NoInputs,
    ScanSettings,
    ScanSummary,
    build_detectors,
    detect_in_order,
    run_scan,
)
from aletheia.scan.sinks import FORMATS, RESUMABLE, OutputExists, OutputUnreadable, check_output, open_sink

__all__ = [
    "FORMATS",
    "RESUMABLE",
    "NoInputs",
    "OutputExists",
    "OutputUnreadable",
    "ScanSettings",
    "ScanSummary",
    "build_detectors",
    "check_output",
    "detect_in_order",
    "open_sink",
    "run_scan",
]
