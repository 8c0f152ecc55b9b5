"""How long a photo sent to POST /api/v1/detect takes while a 256-frame video is being scored, against the same photo
alone, in the same run (so that a loaded machine loads both alike).

    .venv/bin/python benchmarks/photo_during_video.py [--photo PATH] [--video PATH] [--frames 256] [--repeats 5]
        [--model CHECKPOINT] [--without-gate]

A real server (the bundled model, or --model) on 127.0.0.1 answers over HTTP. Without --video a 10 s 1080p 30 fps
clip is made as in benchmarks/video_speed.py. The video goes to POST /api/v1/jobs; once its first frames are done,
`--repeats` photos are sent one after another and timed, then the job is cancelled. `--without-gate` also measures
the way it was before: the video holding the model for its whole run (ModelGate.let_photos_through a no-op), as
the synchronous POST /api/v1/detect did.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _photo_seconds(http, photo: bytes, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        response = http.post("/api/v1/detect", files={"file": ("photo.jpg", photo)}, timeout=600)
        response.raise_for_status()
        times.append(time.perf_counter() - start)
    return times


def _during_a_video_job(http, photo: bytes, video: bytes, frames: int, repeats: int) -> dict:
    job = http.post("/api/v1/jobs", files={"file": ("clip.mp4", video)}, data={"frames": frames}).json()["id"]
    while (state := http.get(f"/api/v1/jobs/{job}").json())["progress"]["frames_done"] in (None, 0):
        if state["status"] in ("done", "error", "cancelled"):
            raise RuntimeError(f"the video job ended before any photo was sent: {state}")
        time.sleep(0.1)
    before = state["progress"]["frames_done"]
    times = _photo_seconds(http, photo, repeats)
    after = http.get(f"/api/v1/jobs/{job}").json()
    http.delete(f"/api/v1/jobs/{job}")
    while http.get(f"/api/v1/jobs/{job}").json()["status"] not in ("done", "error", "cancelled"):
        time.sleep(0.1)
    return {
        "photo_seconds": times,
        "video_status_after_photos": after["status"],
        "video_frames_during_photos": f"{before} -> {after['progress']['frames_done']} of {frames}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photo", type=Path, default=ROOT / "examples" / "astronaut.jpg")
    parser.add_argument("--video", type=Path)
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--model", help="a model spec: bundled name, weights name or file (default: the bundled model)"
    )
    parser.add_argument("--without-gate", action="store_true", help="also measure a video holding the model")
    args = parser.parse_args()

    import httpx

    from aletheia.serving import BackgroundServer, build_app
    from aletheia.serving.gate import ModelGate

    photo = args.photo.read_bytes()
    with tempfile.TemporaryDirectory() as folder:
        if args.video is None:
            from video_speed import make_video

            args.video = make_video(Path(folder) / "clip.mp4")
        video = args.video.read_bytes()
    app = build_app([args.model] if args.model else [], max_upload_bytes=256 * 2**20)
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=600) as http:
        _photo_seconds(http, photo, 1)  # warm-up
        alone = _photo_seconds(http, photo, args.repeats)
        during = _during_a_video_job(http, photo, video, args.frames, args.repeats)
        rows = {"gate (photos go between frames)": during}
        if args.without_gate:
            ModelGate.let_photos_through = lambda self: None  # the video keeps the model to its end
            rows["no gate (before)"] = _during_a_video_job(http, photo, video, args.frames, args.repeats)
        alone_again = _photo_seconds(http, photo, args.repeats)

    base = statistics.median(alone + alone_again)
    print(f"photo alone: median {base:.2f} s over {2 * args.repeats} (before: {statistics.median(alone):.2f} s, "
          f"after: {statistics.median(alone_again):.2f} s)")  # fmt: skip
    for name, row in rows.items():
        median = statistics.median(row["photo_seconds"])
        print(f"{name}: photo median {median:.2f} s = {median / base:.2f}x alone; "
              f"max {max(row['photo_seconds']):.2f} s = {max(row['photo_seconds']) / base:.1f}x; video {row['video_status_after_photos']} after the photos, "
              f"frames {row['video_frames_during_photos']}")  # fmt: skip


if __name__ == "__main__":
    main()
