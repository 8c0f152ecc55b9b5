"""Load and decompression bombs against a real `aletheia serve`, over loopback only, bounded in time.

    .venv/bin/python benchmarks/load_server.py [--model CHECKPOINT] [--clients 50] [--seconds 60] [--bombs 8]

Starts the server in a process of its own (the bundled default model unless --model), then:

1. load: `--clients` concurrent clients POST photos to /api/v1/detect for `--seconds` seconds: the example photo
   mostly, a face-less picture and a truncated JPEG (which must be 4xx) now and then. Reports requests/s, latency
   p50/p95/p99, the count per status (5xx must be 0) and the server's memory (RSS) after a warm-up and after the run.
2. bombs: `--bombs` concurrent uploads of small files that decode huge (a 9000x9000 JPEG, the same header on a few
   hundred bytes, a 9000x9000 RGBA PNG, the largest RGBA PNG the budget admits), with the server's RSS sampled
   every 20 ms: its peak is the figure.

Targets (issue 16): 0 5xx and memory growth under 20% under load; peak under 1.5 GB with 8 bombs.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "astronaut.jpg"


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise LookupError(field)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: str | None, port: int) -> subprocess.Popen:
    models = [model] if model else []
    code = f"from aletheia.serving import serve; serve({models!r}, port={port}, log_level='warning')"
    env = os.environ | {"GRADIO_ANALYTICS_ENABLED": "False", "NO_ALBUMENTATIONS_UPDATE": "1"}
    process = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while True:
        if process.poll() is not None:
            raise RuntimeError("the server exited")
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2)
            return process
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start") from None
            time.sleep(0.3)


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def load_uploads() -> list[tuple[str, bytes]]:
    """What the clients send, in proportion: 8 photos with a face, 1 without, 1 truncated."""
    photo = EXAMPLE.read_bytes()
    wall = _encoded(Image.new("RGB", (320, 240), (120, 130, 140)), "PNG")
    return [("astronaut.jpg", photo)] * 8 + [("wall.png", wall), ("cut.jpg", photo[:3000])]


def bombs(count: int) -> list[tuple[str, bytes]]:
    """Small files that decode huge: a real 9000x9000 JPEG, the same header on a few hundred bytes (the decoder
    allocates the full frame before it finds the data missing), a 9000x9000 RGBA PNG (324 MB decoded), and the
    largest RGBA PNG the server's budget admits (the worst it decodes in full)."""
    from aletheia.serving.service import DECODE_PIXELS

    side, admitted = 9000, int(DECODE_PIXELS**0.5)
    jpeg = _encoded(Image.new("RGB", (side, side), (128, 128, 128)), "JPEG", quality=50)
    header_only = jpeg[:600]
    png = _encoded(Image.new("RGBA", (side, side), (128, 128, 128, 255)), "PNG", optimize=True)
    largest = _encoded(Image.new("RGBA", (admitted, admitted), (128, 128, 128, 200)), "PNG", optimize=True)
    kinds = [
        ("bomb.jpg", jpeg),
        ("bomb-header.jpg", header_only),
        ("bomb.png", png),
        ("admitted.png", largest),
    ]
    return [kinds[i % len(kinds)] for i in range(count)]


async def _client(
    http: httpx.AsyncClient, uploads: list, stop: float, latencies: list, statuses: Counter, rng
) -> None:
    while time.monotonic() < stop:
        name, data = uploads[int(rng.integers(0, len(uploads)))]
        started = time.monotonic()
        try:
            response = await http.post("/api/v1/detect", files={"file": (name, data)})
            statuses[response.status_code] += 1
        except httpx.HTTPError as exc:
            statuses[type(exc).__name__] += 1
            continue
        latencies.append(time.monotonic() - started)


async def run_load(url: str, clients: int, seconds: float) -> dict:
    uploads, latencies, statuses = load_uploads(), [], Counter()
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        started = time.monotonic()
        stop = started + seconds
        await asyncio.gather(
            *(
                _client(http, uploads, stop, latencies, statuses, np.random.default_rng(n))
                for n in range(clients)
            )
        )
        elapsed = time.monotonic() - started
    quantiles = np.quantile(latencies, [0.5, 0.95, 0.99]) if latencies else [float("nan")] * 3
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": len(latencies),
        "requests_per_second": round(len(latencies) / elapsed, 2),
        "latency_p50_s": round(float(quantiles[0]), 3),
        "latency_p95_s": round(float(quantiles[1]), 3),
        "latency_p99_s": round(float(quantiles[2]), 3),
        "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
        "5xx": sum(v for k, v in statuses.items() if isinstance(k, int) and k >= 500),
    }


def run_bombs(url: str, pid: int, count: int) -> dict:
    uploads = bombs(count)
    peak, stop = [rss_bytes(pid)], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak.append(rss_bytes(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    async def send_all() -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=300) as http:
            responses = await asyncio.gather(
                *(http.post("/api/v1/detect", files={"file": upload}) for upload in uploads)
            )
        return [r.status_code for r in responses]

    before = rss_bytes(pid)
    started = time.monotonic()
    statuses = asyncio.run(send_all())
    seconds = time.monotonic() - started
    stop.set()
    sampler.join()
    return {
        "bombs": [f"{name} ({len(data) / 1024:.1f} KB)" for name, data in uploads],
        "statuses": statuses,
        "seconds": round(seconds, 1),
        "rss_before_mb": round(before / 2**20),
        "rss_peak_mb": round(max(peak) / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", help="a model spec: bundled name, weights name or file (default: the bundled model)"
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--bombs", type=int, default=8)
    args = parser.parse_args()
    port = free_port()
    server = start_server(args.model, port)
    url = f"http://127.0.0.1:{port}"
    try:
        report: dict = {"server_rss_at_start_mb": round(rss_bytes(server.pid) / 2**20)}
        asyncio.run(run_load(url, clients=4, seconds=5))  # warm-up: every code path loaded once
        before = rss_bytes(server.pid)
        load = asyncio.run(run_load(url, args.clients, args.seconds))
        after = rss_bytes(server.pid)
        load |= {
            "rss_before_mb": round(before / 2**20),
            "rss_after_mb": round(after / 2**20),
            "rss_growth_percent": round(100 * (after - before) / before, 1),
        }
        report["load"] = load
        if args.bombs:
            report["bombs"] = run_bombs(url, server.pid, args.bombs)
        report["server_rss_high_water_mb"] = round(rss_bytes(server.pid, "VmHWM") / 2**20)
    finally:
        server.terminate()
        server.wait(30)
    print(json.dumps(report, indent=1))
    statuses_ok = report["load"]["5xx"] == 0
    print(
        f"load: {report['load']['requests_per_second']} req/s, p50/p95/p99 "
        f"{report['load']['latency_p50_s']}/{report['load']['latency_p95_s']}/{report['load']['latency_p99_s']} s, "
        f"{report['load']['5xx']} 5xx, RSS {report['load']['rss_before_mb']} -> {report['load']['rss_after_mb']} MB"
        + (f"; bombs: peak RSS {report['bombs']['rss_peak_mb']} MB" if args.bombs else ""),
        file=sys.stderr,
    )
    sys.exit(0 if statuses_ok else 1)


if __name__ == "__main__":
    main()
