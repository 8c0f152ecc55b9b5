"""The Gradio app: upload a photo, see each face boxed and scored, the face crops with their attention maps, a
verdict at an adjustable threshold, and the JSON the REST API would return. Or upload a video: a verdict with a
score per person (face track), the timeline of their scores, a few face crops of each, and the JSON.

Inference runs once per upload (or model or video setting change); moving the threshold only relabels the kept
result, per session. Uploads live in Gradio's per-upload cache folders, results in per-session state and timeline
plots in per-request temporary folders: users share no files.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import gradio as gr

from aletheia.io import IMAGE_EXTENSIONS, InputError
from aletheia.report import ReportItem, model_card_limits, report_html
from aletheia.results import EXPLANATIONS
from aletheia.serving.jobs import Job, JobQueue, QueueFullError
from aletheia.serving.render import (
    attention_overlay,
    draw_faces,
    shrink_for_display,
    timeline_image,
)
from aletheia.serving.service import (
    MAX_VIDEO_FRAMES,
    Detection,
    DetectionService,
    UnknownServedModelError,
    VideoDetection,
    is_video_upload,
    upload_name,
    with_threshold,
)
from aletheia.serving.uploads import read_upload
from aletheia.video import (
    DEFAULT_NUM_FRAMES,
    TRACK_STRATEGIES,
    VIDEO_EXTENSIONS,
    VideoResult,
    is_video_path,
)

# The file picker offers these; Gradio refuses other extensions with its own message, and a file with a right
# extension but bad contents gets load_image's (or the video reader's) message in the verdict area.
IMAGE_FILE_TYPES = sorted(IMAGE_EXTENSIONS)
VIDEO_FILE_TYPES = sorted(VIDEO_EXTENSIONS)
# One label for both: a relabelled component would reach API clients as an update dict instead of the picture.
PICTURE_LABEL = "Faces and their fake probability (a video: over time, a line per person)"
ATTENTION_CAPTION = "where the network looked (attention map, not a map of what is fake)"
# Thumbnails truncate long captions; the gallery's label carries the full caveat.
ATTENTION_SHORT = "where it looked"
INTRO = """# Aletheia deepfake detector
Upload a photo or a video. Every face found is boxed and given the model's **probability that it is fake**; a face
at or above the threshold is called fake. In a video each person's faces are followed over the sampled frames and
scored together; the video is called fake if anyone in it is. The attention maps show where the network looked,
not which pixels are fake. Scores are one model's estimate, not proof."""
WAITING = "Upload a photo or a video, or pick an example, to see the verdict."
KINDS_EXPLAINED = (
    "*Manipulated*: a real face edited (swapped, reenacted, blended). *Generated*: a face made whole by a GAN or "
    "diffusion model. The fake probability is that of either."
)
CANCELLED = "The video was not scored to the end. Upload it again to start over."
API_LINKS = (
    "For programs: the REST API, [documented here](api/v1/docs) (or as [ReDoc](api/v1/redoc)), takes the same "
    "uploads; long videos go to `POST /api/v1/jobs`."
)
# Scrolls the verdict to the top of the screen when it is not all in view or starts in the lower half, as on a phone,
# where the page is one column and the results come after the controls; on a wide screen it is in view already.
# Its bottom counts: with its explanation, band, warnings and table it is most of a phone screen tall.
SHOW_VERDICT = """() => {
  const verdict = document.getElementById("verdict");
  if (!verdict) return;
  const {top, bottom} = verdict.getBoundingClientRect();
  const height = window.innerHeight;
  if (top < 0 || top > height / 2 || bottom > height) verdict.scrollIntoView({block: "start"});
}"""
# Scoring events running at once (the web app's queue; inference itself is serialised per model by the service).
SCORING_CONCURRENCY = 4
READ_ADVICE = "Upload a photo (JPEG, PNG, WebP, ...) or a video (MP4, MOV, WebM, MKV, AVI)."

CALLS = {"fake": "likely **fake**", "real": "likely **real**", "inconclusive": "**inconclusive**"}
MODEL_CARD_URL = "/api/v1/model-card"
REPORT_TTL_SECONDS = 3600
_REPORTS = Path(tempfile.mkdtemp(prefix="aletheia-reports-"))

Kept = Detection | VideoDetection
Outputs = tuple[Any, str, list[tuple[Any, str]], str | None, Kept | None]


def _warning_codes(warnings: list) -> str:
    return ", ".join(f"`{w.code}`" for w in warnings) or "-"


def _about(result: Any, what: str) -> list[str]:
    """The verdict's meaning, the band, the input's warnings and the model card link, under the verdict line."""
    low, high = result.band
    lines = [
        f"*{EXPLANATIONS[result.label]}*",
        "",
        f"Highest {what} score **{result.score:.3f}**; threshold {result.threshold:.2f}, inconclusive between "
        f"{low:.2f} and {high:.2f}; test-time augmentation `{result.tta}`; model `{result.model}`.",
        "",
    ]
    lines += [f"- ⚠ **{w.code}**: {w.message}" for w in result.warnings]
    lines += [
        "",
        f"What this model gets wrong: [model card]({MODEL_CARD_URL}?model={quote(result.model)}).",
        "",
    ]
    return lines


def verdict_markdown(detection: Detection) -> str:
    result = detection.result
    name = result.path
    if not result.faces:
        return (
            f"### No face found\nThe detector found no face in `{name}`, so there is nothing to score. "
            "Try a photo where the face is larger, lit from the front and not cut off.\n\n"
            f"*{EXPLANATIONS['no_face']}*"
        )
    faces = len(result.faces)
    lines = [
        f"### Verdict: {CALLS[result.label]}",
        f"{result.flagged} of {faces} face{'s' if faces != 1 else ''} flagged fake.",
        "",
        *_about(result, "face"),
    ]
    kinds = list(result.faces[0].scores)  # models that score each kind of fake: manipulated, generated
    lines += [
        "| face | fake probability | "
        + "".join(f"{kind} | " for kind in kinds)
        + "spread | call | warnings |",
        "|---|---|" + "---|" * len(kinds) + "---|---|---|",
    ]
    for number, face in enumerate(result.faces, start=1):
        by_kind = "".join(f"{face.scores[kind]:.3f} | " for kind in kinds)
        spread = "-" if face.spread is None else f"{face.spread:.2f}"
        lines.append(
            f"| #{number} | {face.score:.3f} | {by_kind}{spread} | {result.face_label(face)} "
            f"| {_warning_codes(face.warnings)} |"
        )
    notes = {w.code: w.message for face in result.faces for w in face.warnings}
    lines += ["", *(f"- **{code}**: {message}" for code, message in notes.items())]
    if kinds:
        lines += ["", KINDS_EXPLAINED]
    return "\n".join(lines)


def video_verdict_markdown(detection: VideoDetection) -> str:
    result = detection.result
    name = result.path
    sampled = len(result.frames)
    if not result.tracks:
        seen = sum(len(frame.faces) for frame in result.frames)
        why = (
            f"faces were seen only fleetingly ({seen} in all), too briefly to follow a person"
            if seen
            else "the detector found no face"
        )
        return (
            f"### No face found\nIn the {sampled} sampled frame{'s' if sampled != 1 else ''} of `{name}` {why}, so "
            "there is nothing to score. Try a video where the face is larger, lit from the front and in view "
            "for a while, or sample more frames."
        )
    people = len(result.tracks)
    duration = f", {result.info.duration:.1f} s" if result.info else ""
    lines = [
        f"### Verdict: {CALLS[result.label]}",
        f"{result.flagged} of {people} flagged fake ({people} {'people' if people != 1 else 'person'} in {sampled} "
        f"sampled frames{duration}, faces combined by `{result.strategy}`).",
        "",
        *_about(result, "person"),
    ]
    kinds = list(result.tracks[0].scores)
    lines += [
        "| person | fake probability | "
        + "".join(f"{kind} | " for kind in kinds)
        + "seen in | call | warnings |",
        "|---|---|" + "---|" * len(kinds) + "---|---|---|",
    ]
    notes: dict[str, str] = {}
    for track in result.tracks:
        by_kind = "".join(f"{track.scores[kind]:.3f} | " for kind in kinds)
        label, warnings = result.track_verdict(track)
        notes |= {w.code: w.message for w in warnings}
        lines.append(
            f"| {track.id} | {track.score:.3f} | {by_kind}{len(track.frames)} of {sampled} frames "
            f"| {label} | {_warning_codes(warnings)} |"
        )
    lines += ["", *(f"- **{code}**: {message}" for code, message in notes.items())]
    if kinds:
        lines += ["", KINDS_EXPLAINED]
    return "\n".join(lines)


def report_file(detection: Kept | None, service: DetectionService) -> str | None:
    """The HTML report of the kept result, written to a temporary file of its own for the download button."""
    if detection is None:
        return None
    result = detection.result
    image = detection.image if isinstance(detection, Detection) else None
    pipeline = service.pipelines.get(result.model)
    limits = model_card_limits(pipeline.config.weights_path) if pipeline is not None else None
    for old in _REPORTS.glob("*/*.html"):  # Gradio serves its own copy; ours are kept an hour at most
        if time.time() - old.stat().st_mtime > REPORT_TTL_SECONDS:
            old.unlink(missing_ok=True)
            old.parent.rmdir()
    folder = Path(tempfile.mkdtemp(dir=_REPORTS))  # a folder per report: two uploads of one name never clash
    path = folder / f"{Path(result.path).stem or 'upload'}-report.html"
    path.write_text(report_html([ReportItem(result, image)], limits), encoding="utf-8")
    return str(path)


def video_gallery(result: VideoResult) -> list[tuple[Any, str]]:
    """The kept face crops, person by person: the first captioned with the person's score and call, the others
    with the face's own score and time."""
    tracks = {track.id: track for track in result.tracks}
    by_track: dict[int, list[tuple[Any, str]]] = {}
    for frame in result.frames:
        for face in frame.faces:
            if face.crop is None or face.track not in tracks:
                continue
            shown = by_track.setdefault(face.track, [])
            if not shown:
                track = tracks[face.track]
                caption = f"person {face.track}: {track.score:.3f} {result.track_verdict(track)[0]}"
            else:
                caption = f"person {face.track} at {frame.time:.1f} s: {face.score:.3f}"
            shown.append((face.crop, caption))
    return [item for track in sorted(by_track) for item in by_track[track]]


def render_video_outputs(detection: VideoDetection) -> Outputs:
    result = detection.result
    as_json = json.dumps(result.to_json(), indent=2)
    return (
        timeline_image(result),
        video_verdict_markdown(detection),
        video_gallery(result),
        as_json,
        detection,
    )


def render_outputs(detection: Kept) -> Outputs:
    if isinstance(detection, VideoDetection):
        return render_video_outputs(detection)
    result = detection.result
    gallery: list[tuple[Any, str]] = []
    for number, face in enumerate(result.faces, start=1):
        if face.crop is None:
            continue
        gallery.append((face.crop, f"#{number} {face.score:.3f} {result.face_label(face)}"))
        if face.attention is not None:
            gallery.append((attention_overlay(face.crop, face.attention), f"#{number} {ATTENTION_SHORT}"))
    as_json = json.dumps(result.to_json(), indent=2)
    return draw_faces(detection.image, result), verdict_markdown(detection), gallery, as_json, detection


def _message(title: str, text: str) -> Outputs:
    return None, f"### {title}\n{text}", [], None, None


def build_demo(
    service: DetectionService, examples: Sequence[str | Path] = (), jobs: JobQueue | None = None
) -> gr.Blocks:
    """The Blocks app; it is served by mounting it on the FastAPI app (see server.build_app). Videos run as jobs
    of `jobs` (default: a queue of the app's own)."""

    jobs = jobs or JobQueue(service)

    def analyse(
        path: str | None,
        model: str | None,
        threshold: float,
        frames: float = DEFAULT_NUM_FRAMES,
        strategy: str = "mean_logit",
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's way of asking for a progress bar
    ) -> Outputs:
        session = request.session_hash if request is not None else None
        if session:
            jobs.cancel_owned(session)  # a new upload replaces the video still being scored
        if not path:
            return None, WAITING, [], None, None
        name = upload_name(path)  # Gradio keeps the client's file name inside a per-upload folder
        try:
            data = read_upload(path)  # never a file of the server's own, whatever an API client sends
        except InputError as exc:
            return _message("Could not read this file", str(exc))
        try:
            if is_video_upload(data, name):
                return score_video(data, name, session, progress, model=model, threshold=threshold,
                                   num_frames=int(frames), strategy=strategy)  # fmt: skip
            detection = service.detect(data, name, model=model, threshold=threshold, return_attention=True)
        except InputError as exc:
            return _message("Could not read this file", f"{exc}. {READ_ADVICE}")
        except UnknownServedModelError as exc:
            return _message("Unknown model", str(exc))
        except ValueError as exc:  # a setting out of range, sent by an API client rather than the widgets
            return _message("Invalid setting", str(exc))
        # Sessions keep only a display-sized copy of the photo: a phone photo would hold ~70 MB for an hour.
        return render_outputs(Detection(shrink_for_display(detection.image), detection.result))

    def score_video(
        data: bytes, name: str, session: str | None, progress: gr.Progress, **settings: Any
    ) -> Outputs:
        """A video runs as a job (jobs.py), as POST /api/v1/jobs does: its frames show on the progress bar, the
        Cancel button stops it, and photos, the page's and the REST API's, never wait for it."""
        service.resolve(settings["model"])  # an unknown model is told at once, not after the queue
        try:
            job = jobs.submit(data, name, video=True, owner=session, keep_crops=True, **settings)
        except QueueFullError as exc:
            return _message("The server is busy", str(exc))

        def show(job: Job) -> None:
            if job.frames_total:
                progress((job.frames_done or 0, job.frames_total), desc="Scoring frames", unit="frames")

        jobs.wait(job, on_progress=show)
        if job.status == "cancelled":
            return _message("Cancelled", CANCELLED)
        if job.failure is not None:
            raise job.failure  # the same messages as a photo's
        if job.status == "error":
            return _message("Something went wrong", job.error or "")
        return render_outputs(job.outcome)

    def cancel(request: gr.Request) -> None:
        jobs.cancel_owned(request.session_hash)

    def show_cancel(path: str | None) -> Any:
        return gr.update(visible=bool(path) and is_video_path(path))

    def change_model(
        path: str | None,
        model: str | None,
        frames: float = DEFAULT_NUM_FRAMES,
        strategy: str = "mean_logit",
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[Any, ...]:
        # A model brings its own operating point: reset the slider to it, then rescore.
        threshold = service.default_threshold(model)
        return threshold, *analyse(path, model, threshold, frames, strategy, request, progress)

    def change_video_settings(
        kept: Kept | None,
        path: str | None,
        model: str | None,
        threshold: float,
        frames: float,
        strategy: str,
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> Outputs:
        # Only a video depends on these: a photo's result stands.
        if not isinstance(kept, VideoDetection):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return analyse(path, model, threshold, frames, strategy, request, progress)

    def relabelled(detection: Kept | None, threshold: float | None) -> Kept | None:
        if detection is None or threshold is None:
            return detection
        if isinstance(detection, VideoDetection):
            return VideoDetection(with_threshold(detection.result, threshold))
        return Detection(detection.image, with_threshold(detection.result, threshold))

    def relabel(detection: Kept | None, threshold: float | None) -> Outputs:
        if detection is None or threshold is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return render_outputs(relabelled(detection, threshold))

    with gr.Blocks(
        title="Aletheia deepfake detector", analytics_enabled=False, delete_cache=(3600, 3600)
    ) as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=2):
                upload = gr.File(
                    label="Photo or video",
                    file_types=IMAGE_FILE_TYPES + VIDEO_FILE_TYPES,
                    type="filepath",
                    elem_id="photo",
                )
                model = gr.Dropdown(
                    service.model_names, value=service.default_model, label="Model", elem_id="model"
                )
                threshold = gr.Slider(
                    0.0,
                    1.0,
                    value=service.default_threshold(),
                    step=0.01,
                    label="Threshold",
                    info="a face scoring at or above this is called fake (default: the model's own)",
                    elem_id="threshold",
                )
                with gr.Accordion("Video settings", open=False):
                    frames = gr.Slider(
                        1,
                        MAX_VIDEO_FRAMES,
                        value=DEFAULT_NUM_FRAMES,
                        step=1,
                        label="Frames to sample",
                        info="evenly spaced over the video; more follow people better and take longer",
                        elem_id="frames",
                    )
                    strategy = gr.Dropdown(
                        list(TRACK_STRATEGIES),
                        value="mean_logit",
                        label="How a person's faces become one score",
                        info="mean_logit: all faces count; confident: the DFDC winner's rule; max: the most "
                        "fake-looking face",
                        elem_id="track_strategy",
                    )
                if examples:
                    gr.Examples(
                        [[str(p)] for p in examples], inputs=[upload], label="Example photos (public domain)"
                    )
                gallery = gr.Gallery(
                    label=f"Face crops as the model sees them, and {ATTENTION_CAPTION} (videos: a few per person)",
                    columns=2,
                    height="auto",
                    format="png",
                    object_fit="contain",
                    buttons=["download", "fullscreen"],
                    elem_id="faces",
                )
            with gr.Column(scale=3):
                stop = gr.Button("Cancel", variant="stop", size="sm", visible=False, elem_id="cancel")
                verdict = gr.Markdown(WAITING, elem_id="verdict")
                annotated = gr.Image(
                    label=PICTURE_LABEL,
                    type="numpy",
                    interactive=False,
                    format="png",
                    buttons=["download", "fullscreen"],  # no "share" (to Hugging Face): results stay here
                    elem_id="annotated",
                )
                report = gr.DownloadButton(
                    "Download report (HTML, printable to PDF)",
                    value=None,
                    elem_id="report",
                    interactive=False,
                )
        with gr.Accordion("JSON (the same as POST /api/v1/detect returns)", open=False):
            # Text, not gr.JSON: gradio_client takes any dict with a "path" key for a file to download.
            as_json = gr.Code(language="json", interactive=False, elem_id="json")
        gr.Markdown(API_LINKS, elem_id="api-links")
        kept = gr.State(None, time_to_live=3600)

        def refresh_report(detection: Kept | None) -> Any:
            path = report_file(detection, service)
            return gr.DownloadButton(value=path, interactive=path is not None)

        outputs = [annotated, verdict, gallery, as_json, kept]
        # Gradio's generated API page is not Aletheia's API (that is /api/v1): its endpoints stay callable by
        # gradio_client but undocumented, and the footer that links to the page is not shown (server.py).
        # Scoring shares a concurrency group wider than one: a video waits for its job, not for the CPU, and must
        # not keep another user's photo waiting behind it (the service serialises inference on a model).
        scoring: dict[str, Any] = {
            "api_visibility": "undocumented",
            "concurrency_id": "scoring",
            "concurrency_limit": SCORING_CONCURRENCY,
        }
        quiet: dict[str, Any] = {"api_visibility": "undocumented", "queue": False, "show_progress": "hidden"}
        # The Cancel button shows (for a video) before scoring starts, and hides once it has ended.
        scored = upload.change(show_cancel, [upload], [stop], **quiet).then(
            analyse, [upload, model, threshold, frames, strategy], outputs, api_name="detect", **scoring
        )
        scored.then(lambda: gr.update(visible=False), None, [stop], **quiet)
        # On a narrow screen the results column sits below the controls: bring the verdict into view at once
        # (a video's progress bar shows there) and again when it is in.
        upload.change(None, js=SHOW_VERDICT, **quiet)
        scored.then(None, js=SHOW_VERDICT, **quiet)
        stop.click(cancel, None, None, **quiet)
        events = [
            scored,
            model.input(
                change_model,
                [upload, model, frames, strategy],
                [threshold, *outputs],
                api_name="change_model",
                **scoring,
            ),
        ]
        video_settings = [kept, upload, model, threshold, frames, strategy]
        events.append(
            frames.release(
                change_video_settings, video_settings, outputs, api_name="change_frames", **scoring
            )
        )
        events.append(
            strategy.input(
                change_video_settings, video_settings, outputs, api_name="change_track_strategy", **scoring
            )
        )
        # Fires on programmatic updates too (change_model): harmless, relabelling is idempotent and cheap.
        events.append(
            threshold.change(
                relabel,
                [kept, threshold],
                outputs,
                api_name="relabel",
                api_visibility="undocumented",
                trigger_mode="always_last",
                show_progress="hidden",
            )
        )
        # The report follows every new result (written after it is shown, so it never delays the verdict).
        for event in events[:-1]:
            event.then(refresh_report, [kept], [report], api_visibility="private", show_progress="hidden")
        # The threshold's own listener, not a `then` of the relabelling: chained to an "always_last" event, it kept
        # the next threshold change from running. It judges the kept result at the threshold itself.
        threshold.change(
            lambda detection, value: refresh_report(relabelled(detection, value)),
            [kept, threshold],
            [report],
            api_visibility="private",
            trigger_mode="always_last",
            show_progress="hidden",
        )
    return demo
