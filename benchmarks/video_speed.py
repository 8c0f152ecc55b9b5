"""Seconds to score one 10 s 1080p video (32 frames by default), by stage: decode, detect, classify.

    .venv/bin/python benchmarks/video_speed.py [--model CHECKPOINT] [--video PATH] [--frames 32] [--repeats 3]
        [--backends onnx torch] [--threads 2] [--baseline-commit REV --rounds 3]

Without --video a 10 s 1920x1080 30 fps H.264 video is made from the bundled public-domain example: the
astronaut (face about 190 px, as in DFDC) drifting across a blurred-noise background, encoded by libx264 with its
default settings (a keyframe every 250 frames, as in DFDC and FF++). Without --model a randomly initialised
EfficientNetAutoAttB4 is used (speed does not depend on the weights).

Stages are timed separately on the same frames: `detect` as videos are searched (whole frames every 4th frame,
windows around known faces between), `detect_every_frame_whole` the whole-frame search on every frame, for
comparison; `classify` the faces as videos score them (each face once, or with the video's TTA); `total` is
`VideoDetector.predict` end to end, where decoding overlaps the rest. Each is the median of the repeats after one
warm-up run. Wall and CPU seconds are both given: on a machine shared with other jobs, CPU seconds (summed over
threads) are the steadier measure of the work.

With --baseline-commit, the same measurement runs for a `git archive` of that commit and for this tree, each in a
process of its own, alternating for --rounds rounds; the medians over rounds are printed side by side with their
ratio (baseline / this tree), so that a loaded machine slows both alike. The CPU model is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "astronaut.jpg"


def make_video(
    path: Path, seconds: float = 10.0, fps: int = 30, size: tuple[int, int] = (1920, 1080)
) -> Path:
    """The astronaut moving across a width x height canvas, H.264 (libx264 defaults) in MP4."""
    import av
    import cv2

    from aletheia.io import load_image

    width, height = size
    side = min(1000, height)  # the face is about a fifth of the photo's side
    face = cv2.resize(load_image(EXAMPLE), (side, side), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(60, 200, (height, width, 3), dtype=np.uint8), (0, 0), 8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        count = round(seconds * fps)
        for i in range(count):
            x = round((width - side) * i / max(1, count - 1))
            y = round((height - side) / 2 * (1 + np.sin(2 * np.pi * i / count)))
            frame = background.copy()
            frame[y : y + side, x : x + side] = face
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _median_s(fn, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds (all threads) of fn. CPU time shows the work when other jobs share the cores."""
    fn()  # warm-up: first calls allocate and pick kernels
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return round(statistics.median(wall), 2), round(statistics.median(cpu), 2)


def measure(checkpoint: str, video: str, frames: int, repeats: int, backend: str) -> dict:
    from aletheia.faces.extract import crop_face
    from aletheia.pipeline import DeepfakeDetectorPipeline
    from aletheia.video import VideoDetector, VideoReader

    pipeline = DeepfakeDetectorPipeline(model_checkpoint=checkpoint, backend=backend)
    videos = VideoDetector(pipeline, num_frames=frames)
    result = videos.predict(video)  # also sets the detector's min face size for this video

    def decode() -> list:
        with VideoReader(video) as reader:
            return list(reader.frames(reader.sample_times(frames)))

    images = [f.image for f in decode()]

    def detect() -> list:
        videos.search.reset()
        return [videos.search(image) for image in images]

    found = detect()
    crops = np.stack(
        [
            crop_face(image, face.box, pipeline.face_policy, pipeline.config.input_size)
            for image, faces in zip(images, found, strict=True)
            for face in faces
        ]
    )
    info = result.info
    # As the video scores them: trees before VideoDetector.tta scored video faces with the pipeline's TTA.
    tta = getattr(videos, "tta", pipeline.tta)
    stages = {
        "decode": decode,
        "detect": detect,
        "detect_every_frame_whole": lambda: [videos.detector.detect(i) for i in images],
        "classify": lambda: pipeline.with_tta(tta).logits(crops),
        "total": lambda: videos.predict(video),
    }
    timings = {name: _median_s(fn, repeats) for name, fn in stages.items()}
    return {
        "video": f"{Path(video).name} {info.width}x{info.height} {info.duration:.1f}s {info.codec}",
        "backend": backend,
        "tta": tta,
        "score": round(float(result.score), 4) if result.score is not None else None,
        "frames": len(result.frames),
        "faces": len(crops),
        "tracks": len(result.tracks),
        "min_face_px": videos.detector.min_face_size,
        **{f"{name}_s": wall for name, (wall, _) in timings.items()},
        **{f"{name}_cpu_s": cpu for name, (_, cpu) in timings.items()},
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} logical CPUs"
    except OSError:
        pass
    import platform

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs"


def compare(args: argparse.Namespace, checkpoint: str, video: str, tmp_dir: Path) -> None:
    """This tree against a baseline commit, each measured in its own process, alternating rounds."""
    baseline = tmp_dir / "baseline"
    baseline.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline_commit],
                             capture_output=True, check=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive, check=True)
    trees = {"baseline": baseline, "this tree": ROOT}
    rows: dict[str, list[dict]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            command = [sys.executable, __file__, "--model", checkpoint, "--video", video, "--frames",
                       str(args.frames), "--repeats", str(args.repeats), "--backends", args.backends[0], "--json"]  # fmt: skip
            env = {**os.environ, "PYTHONPATH": str(tree)}
            proc = subprocess.run(command, env=env, capture_output=True, text=True)
            if proc.returncode:
                raise RuntimeError(proc.stderr[-3000:])
            rows[name].append(json.loads(proc.stdout.splitlines()[-1]))
    print(f"CPU: {cpu_model()}; load average {os.getloadavg()[0]:.1f}; baseline {args.baseline_commit}, "
          f"{args.rounds} rounds alternating, medians")  # fmt: skip
    first = rows["this tree"][0]
    print("| | " + " | ".join(trees) + " | baseline / this tree |")
    print("|---|---|---|---|")
    for key in first:
        values = {name: [row.get(key) for row in rows[name]] for name in trees}
        if all(isinstance(v, (int, float)) for vs in values.values() for v in vs):
            medians = {name: statistics.median(vs) for name, vs in values.items()}
            ratio = (
                medians["baseline"] / medians["this tree"]
                if key.endswith("_s") and medians["this tree"]
                else ""
            )
            cells = [f"{medians[name]:g}" for name in trees] + [f"{ratio:.2f}x" if ratio else ""]
        else:
            cells = [str(values[name][0]) for name in trees] + [""]
        print(f"| {key} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="checkpoint file (default: random EfficientNetAutoAttB4)")
    parser.add_argument("--video", help="video to time (default: a generated 10 s 1080p one)")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", nargs="*", default=["onnx", "torch"])
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--baseline-commit", help="a commit of this repository to measure against, same run")
    parser.add_argument("--rounds", type=int, default=3, help="with --baseline-commit: alternating rounds")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one row, for compare()
    args = parser.parse_args()

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        checkpoint = args.model
        if checkpoint is None:
            import torch

            from aletheia.models.efficientnet import EfficientNetAutoAttB4

            torch.manual_seed(0)
            checkpoint = str(tmp_dir / "EfficientNetAutoAttB4_random.pth")
            torch.save(EfficientNetAutoAttB4().state_dict(), checkpoint)
        if args.video:
            video = args.video
        else:
            start = time.perf_counter()
            video = str(make_video(tmp_dir / "astronaut_10s_1080p.mp4"))
            print(f"made {video} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        if args.baseline_commit:
            compare(args, checkpoint, video, tmp_dir)
            return
        rows = [measure(checkpoint, video, args.frames, args.repeats, b) for b in args.backends]
    if args.json:
        print(json.dumps(rows[0]))
        return
    header = list(rows[0])
    print(f"CPU: {cpu_model()}; load average {os.getloadavg()[0]:.1f}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in header) + " |")


if __name__ == "__main__":
    main()
