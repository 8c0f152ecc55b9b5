"""Deepfake detection in videos: sampled frames, face tracks (one per person), per-person and per-video verdicts.

    from aletheia.video import VideoDetector
    result = VideoDetector(pipeline, num_frames=32, strategy="mean_logit").predict("clip.mp4")
    print(result.to_json())

`predict_media(pipeline, paths)` scores a mix of images and videos in order (what `aletheia detect` runs).
"""

from aletheia.video.decode import (
    DEFAULT_NUM_FRAMES,
    VIDEO_EXTENSIONS,
    SampledFrame,
    VideoInfo,
    VideoInput,
    VideoReader,
    is_video_path,
    sample_frames,
)
from aletheia.video.detect import VideoDetector, predict_media
from aletheia.video.plot import plot_timeline
from aletheia.video.results import FrameResult, TrackResult, VideoFace, VideoResult
from aletheia.video.search import FrameFaceSearch
from aletheia.video.tracks import TRACK_STRATEGIES, TrackLinker, score_track

__all__ = [
    "DEFAULT_NUM_FRAMES",
    "TRACK_STRATEGIES",
    "VIDEO_EXTENSIONS",
    "FrameFaceSearch",
    "FrameResult",
    "SampledFrame",
    "TrackLinker",
    "TrackResult",
    "VideoDetector",
    "VideoFace",
    "VideoInfo",
    "VideoInput",
    "VideoReader",
    "VideoResult",
    "is_video_path",
    "plot_timeline",
    "predict_media",
    "sample_frames",
    "score_track",
]
