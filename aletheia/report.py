"""A report to file: one self-contained HTML page for one or more results.

Everything is inside the page (pictures as data URIs, styles inline, no script, no font or image fetched from
anywhere), and its print styles make "Print to PDF" give a clean document. Each input gets its verdict and what it
means, the annotated photo or the video's timeline, a row per face (a video: per person) with per-kind scores where
the model has them, the spread across augmented views, the warnings, and the provenance; the page ends with the
limits from the model card that sits beside the model's weights file (MODEL_CARD.md), when there is one.
`aletheia report` and the web app's download button both write it.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from aletheia.results import EXPLANATIONS, ImageResult
from aletheia.video.results import VideoResult

LIMITS_HEADING = "## Known failure modes"
PICTURE_MAX_SIDE = 1200
THUMBNAIL_SIDE = 112

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .5rem 0; } td, th { border: 1px solid #ccc; padding: 3px 8px;
text-align: left; vertical-align: top; } th { background: #f3f3f3; }
.verdict { font-weight: bold; padding: 2px 8px; border-radius: 4px; color: #fff; }
.fake { background: #d62728; } .real { background: #2ca02c; } .inconclusive { background: #bf7800; }
.no_face, .error { background: #777; }
img.picture { max-width: 100%; min-width: min(100%, 24rem); border: 1px solid #ccc; } img.crop { width: 72px; height: 72px; }
.warnings li { color: #7a4a00; } code { font-size: 12px; } .small { color: #555; font-size: 12px; }
section.input { break-inside: avoid-page; }
@media print { body { margin: 0; max-width: none; font-size: 11px; } h2 { break-after: avoid; }
  section.input { break-before: page; } section.input:first-of-type { break-before: auto; } }
"""


@dataclass
class ReportItem:
    """One result and the picture that goes with it: the decoded photo (boxes are drawn on it), or None for a
    video (its timeline is drawn) or an input that could not be read."""

    result: ImageResult | VideoResult
    image: np.ndarray | None = None


def data_uri(picture: np.ndarray, fmt: str = "JPEG", max_side: int = PICTURE_MAX_SIDE) -> str:
    image = Image.fromarray(picture)
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 88} if fmt == "JPEG" else {}))
    mime = "jpeg" if fmt == "JPEG" else fmt.lower()
    return f"data:image/{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def model_card_limits(weights: str | Path | None) -> str | None:
    """The "Known failure modes" section of the MODEL_CARD.md beside a weights file, as markdown (None if none)."""
    if weights is None:
        return None
    card = Path(weights).parent / "MODEL_CARD.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8")
    start = text.find(LIMITS_HEADING)
    if start < 0:
        return None
    body = text[start + len(LIMITS_HEADING) :]
    end = body.find("\n## ")
    return (body if end < 0 else body[:end]).strip()


def _inline(text: str) -> str:
    """Escaped markdown text with **bold** and `code` kept."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _markdown_list(markdown: str) -> str:
    items: list[str] = []
    for line in markdown.splitlines():
        if line.startswith("- "):
            items.append(line[2:].strip())
        elif line.strip() and items:
            items[-1] += " " + line.strip()
    return "<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in items) + "</ul>"


def _warnings(items: list[dict]) -> str:
    if not items:
        return ""
    rows = "".join(
        f"<li><code>{html.escape(w['code'])}</code> {html.escape(w['message'])}</li>" for w in items
    )
    return f'<ul class="warnings">{rows}</ul>'


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pill(label: str) -> str:
    return f'<span class="verdict {html.escape(label)}">{html.escape(label)}</span>'


def _picture(item: ReportItem) -> str:
    from aletheia.serving.render import draw_faces, timeline_image

    result = item.result
    if isinstance(result, VideoResult):
        if result.error is not None:
            return ""
        uri = data_uri(timeline_image(result), "PNG")
        alt = "fake probability of each person over time"
    elif item.image is not None:
        uri = data_uri(draw_faces(item.image, result, max_side=PICTURE_MAX_SIDE))
        alt = "the photo with each face boxed, scored and labelled"
    else:
        return ""
    return f'<p><img class="picture" src="{uri}" alt="{alt}"></p>'


def _rows(item: ReportItem, record: dict) -> str:
    result = item.result
    video = isinstance(result, VideoResult)
    entries = record["tracks"] if video else record["faces"]
    if not entries:
        return ""
    kinds = list(entries[0].get("scores", {}))
    head = ["person" if video else "face", "verdict", "fake probability", *kinds]
    head += ["seen in"] if video else ["spread", "crop"]
    head.append("warnings")
    rows = []
    for number, entry in enumerate(entries, start=1):
        cells = [str(entry["id"]) if video else f"#{number}", _pill(entry["label"]), _fmt(entry["score"])]
        cells += [_fmt(entry["scores"][k]) for k in kinds]
        if video:
            cells.append(f"{len(entry['frames'])} of {len(record['frames'])} frames")
        else:
            crop = result.faces[number - 1].crop
            thumb = (
                ""
                if crop is None
                else f'<img class="crop" src="{data_uri(crop, "JPEG", THUMBNAIL_SIDE)}" alt="">'
            )
            cells += [_fmt(entry.get("spread"), 2), thumb]
        cells.append(_warnings(entry.get("warnings", [])))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
    return f"<table>{header}{''.join(rows)}</table>"


def _section(item: ReportItem) -> str:
    record = item.result.to_json()
    label = record["label"]
    low, high = record["band"]
    parts = [
        f'<section class="input"><h2>{html.escape(record["path"])}</h2>',
        f"<p>{_pill(label)} {html.escape(record['explanation'])}</p>",
        f'<p class="small">Highest score {_fmt(record["score"])}; threshold {record["threshold"]:.3f}; '
        f"inconclusive between {low:.3f} and {high:.3f}; test-time augmentation <code>{html.escape(record['tta'])}"
        f"</code>; model <code>{html.escape(record['model'])}</code>.</p>",
    ]
    if record["error"]:
        parts.append(f"<p>Error: {html.escape(record['error'])}</p>")
    parts += [_picture(item), _rows(item, record)]
    if record["warnings"]:
        parts.append("<p>About the input as a whole:</p>" + _warnings(record["warnings"]))
    if provenance := record.get("provenance"):
        cells = "".join(f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(str(v))}</code></td></tr>"
                        for k, v in provenance.items())  # fmt: skip
        parts.append(f'<table class="small">{cells}</table>')
    return "".join(parts) + "</section>"


def report_html(
    items: Sequence[ReportItem], limits: str | None = None, title: str = "Aletheia report"
) -> str:
    """The whole page. `limits`: the model card's known failure modes (markdown), from `model_card_limits`."""
    flagged = sum(item.result.label == "fake" for item in items)
    inconclusive = sum(item.result.label == "inconclusive" for item in items)
    legend = "".join(
        f"<tr><td>{_pill(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in EXPLANATIONS.items()
    )
    limits_html = (
        f"<h2>Known limits of this model (from its model card)</h2>{_markdown_list(limits)}"
        if limits
        else "<h2>Known limits of this model</h2><p>No model card was found beside this model's weights.</p>"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{flagged} of {len(items)} inputs flagged fake, {inconclusive} inconclusive. Scores are one model's "
        "estimate of the probability that a face was manipulated; they are not proof.</p>"
        f"<table>{legend}</table>"
        + "".join(_section(item) for item in items)
        + limits_html
        + "</body></html>"
    )


def write_report(path: str | Path, items: Sequence[ReportItem], limits: str | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(items, limits), encoding="utf-8")
    return path
