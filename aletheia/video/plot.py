"""Timeline plot of a video's per-frame face scores, one line per track (person)."""

from __future__ import annotations

from pathlib import Path

from aletheia.video.results import VideoResult


def plot_timeline(result: VideoResult, path: str | Path) -> Path:
    """Write a PNG: fake probability of each face over time, a line per track, faces in no track as grey crosses,
    the decision threshold dashed. Returns the path written."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # not pyplot: no global state, safe in servers and threads

    figure = Figure(figsize=(8, 3.2), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    for track in result.tracks:
        points = [(fr.time, f.score) for fr in result.frames for f in fr.faces if f.track == track.id]
        times, scores = zip(*points, strict=True)
        axes.plot(times, scores, marker="o", markersize=3, label=f"person {track.id}: {track.score:.2f}")
    stray = [(fr.time, f.score) for fr in result.frames for f in fr.faces if f.track is None]
    if stray:
        axes.scatter(*zip(*stray, strict=True), marker="x", color="grey", label="not in a track")
    axes.axhline(result.threshold, color="black", linestyle="--", linewidth=1, label="threshold")
    end = result.info.duration if result.info else max((fr.time for fr in result.frames), default=1.0)
    axes.set(xlim=(0, max(end, 1e-3)), ylim=(-0.02, 1.02), xlabel="time (s)", ylabel="fake probability")
    score = "-" if result.score is None else f"{result.score:.3f}"
    axes.set_title(f"{Path(result.path).name}: {result.label} ({score})", fontsize=10)
    if result.tracks or stray:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
