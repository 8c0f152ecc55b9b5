"""The Gradio app: upload a photo, see each face boxed and scored, the face crops with their attention maps, a
verdict at an adjustable threshold, and the JSON the REST API would return.

Inference runs once per upload (or model change); moving the threshold only relabels the kept result, per session.
Uploads live in Gradio's per-upload cache folders and results in per-session state: users share no files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from aletheia.io import IMAGE_EXTENSIONS, InputError
from aletheia.serving.render import attention_overlay, draw_faces, face_label, shrink_for_display
from aletheia.serving.service import (
    Detection,
    DetectionService,
    UnknownServedModelError,
    upload_name,
    with_threshold,
)

# The file picker offers these; Gradio refuses other extensions with its own message, and a file with a right
# extension but bad contents gets load_image's message in the verdict area.
IMAGE_FILE_TYPES = sorted(IMAGE_EXTENSIONS)
ATTENTION_CAPTION = "where the network looked (attention map, not a map of what is fake)"
# Thumbnails truncate long captions; the gallery's label carries the full caveat.
ATTENTION_SHORT = "where it looked"
INTRO = """# Aletheia deepfake detector
Upload a photo. Every face found is boxed and given the model's **probability that it is fake**; a face at or above
the threshold is called fake. The attention maps show where the network looked, not which pixels are fake.
Scores are one model's estimate, not proof."""
WAITING = "Upload a photo, or pick an example, to see the verdict."

Outputs = tuple[Any, str, list[tuple[Any, str]], str | None, Detection | None]


def verdict_markdown(detection: Detection) -> str:
    result = detection.result
    name, threshold = result.path, result.threshold
    if not result.faces:
        return (
            f"### No face found\nThe detector found no face in `{name}`, so there is nothing to score. "
            "Try a photo where the face is larger, lit from the front and not cut off."
        )
    call = "likely **fake**" if result.label == "fake" else "likely **real**"
    relation = "≥" if result.label == "fake" else "<"
    lines = [
        f"### Verdict: {call}",
        f"Highest face score **{result.score:.3f}** {relation} threshold {threshold:.2f} "
        f"(model `{result.model}`, {len(result.faces)} face{'s' if len(result.faces) != 1 else ''}).",
        "",
        "| face | fake probability | call |",
        "|---|---|---|",
    ]
    for number, face in enumerate(result.faces, start=1):
        lines.append(f"| #{number} | {face.score:.3f} | {face_label(face.score, threshold)} |")
    return "\n".join(lines)


def render_outputs(detection: Detection) -> Outputs:
    result = detection.result
    gallery: list[tuple[Any, str]] = []
    for number, face in enumerate(result.faces, start=1):
        if face.crop is None:
            continue
        gallery.append((face.crop, f"#{number} {face.score:.3f} {face_label(face.score, result.threshold)}"))
        if face.attention is not None:
            gallery.append((attention_overlay(face.crop, face.attention), f"#{number} {ATTENTION_SHORT}"))
    as_json = json.dumps(result.to_json(), indent=2)
    return draw_faces(detection.image, result), verdict_markdown(detection), gallery, as_json, detection


def _message(title: str, text: str) -> Outputs:
    return None, f"### {title}\n{text}", [], None, None


def build_demo(service: DetectionService, examples: Sequence[str | Path] = ()) -> gr.Blocks:
    """The Blocks app; it is served by mounting it on the FastAPI app (see server.build_app)."""

    def analyse(path: str | None, model: str | None, threshold: float) -> Outputs:
        if not path:
            return None, WAITING, [], None, None
        name = upload_name(path)  # Gradio keeps the client's file name inside a per-upload folder
        try:
            detection = service.detect(
                Path(path).read_bytes(), name, model=model, threshold=threshold, return_attention=True
            )
        except InputError as exc:
            return _message("Could not read this file", f"{exc}. Upload a photo (JPEG, PNG, WebP, ...).")
        except UnknownServedModelError as exc:
            return _message("Unknown model", str(exc))
        # Sessions keep only a display-sized copy of the photo: a phone photo would hold ~70 MB for an hour.
        return render_outputs(Detection(shrink_for_display(detection.image), detection.result))

    def change_model(path: str | None, model: str | None) -> tuple[Any, ...]:
        # A model brings its own operating point: reset the slider to it, then rescore.
        threshold = service.default_threshold(model)
        return threshold, *analyse(path, model, threshold)

    def relabel(detection: Detection | None, threshold: float | None) -> Outputs:
        if detection is None or threshold is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return render_outputs(Detection(detection.image, with_threshold(detection.result, threshold)))

    with gr.Blocks(
        title="Aletheia deepfake detector", analytics_enabled=False, delete_cache=(3600, 3600)
    ) as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=2):
                upload = gr.File(label="Photo", file_types=IMAGE_FILE_TYPES, type="filepath", elem_id="photo")
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
                if examples:
                    gr.Examples(
                        [[str(p)] for p in examples], inputs=[upload], label="Example photos (public domain)"
                    )
                gallery = gr.Gallery(
                    label=f"Face crops as the model sees them, and {ATTENTION_CAPTION}",
                    columns=2,
                    height="auto",
                    format="png",
                    object_fit="contain",
                    elem_id="faces",
                )
            with gr.Column(scale=3):
                verdict = gr.Markdown(WAITING, elem_id="verdict")
                annotated = gr.Image(
                    label="Faces and their fake probability",
                    type="numpy",
                    interactive=False,
                    format="png",
                    elem_id="annotated",
                )
        with gr.Accordion("JSON (the same as POST /api/v1/detect returns)", open=False):
            # Text, not gr.JSON: gradio_client takes any dict with a "path" key for a file to download.
            as_json = gr.Code(language="json", interactive=False, elem_id="json")
        kept = gr.State(None, time_to_live=3600)

        outputs = [annotated, verdict, gallery, as_json, kept]
        upload.change(analyse, [upload, model, threshold], outputs, api_name="detect")
        model.input(change_model, [upload, model], [threshold, *outputs], api_name="change_model")
        # Fires on programmatic updates too (change_model): harmless, relabelling is idempotent and cheap.
        threshold.change(
            relabel,
            [kept, threshold],
            outputs,
            api_name="relabel",
            trigger_mode="always_last",
            show_progress="hidden",
        )
    return demo
