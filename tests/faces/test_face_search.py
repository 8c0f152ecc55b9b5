"""The face search against a hand count of the faces in the development photos (../shared/data/photos).

Each photo was looked at and its faces counted by hand: `certain` faces any search should find (faces cut by the
frame edge included), and at most `most` faces a search may fairly report (adding blurred background faces, faces
half hidden behind others, people in framed pictures). Detections beyond `most` are false detections. Only the
numbers are kept here, never the photos.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aletheia.faces.extract import FaceDetector
from aletheia.io import load_image

# (certain, most) per photo; every photo not listed holds exactly one face.
HAND_COUNT = {
    "blazeface/1face.png": (1, 1),
    "blazeface/3faces.png": (3, 3),
    "blazeface/4faces.png": (4, 4),
    "deepface/couple.jpg": (2, 2),
    "deepface/img16.jpg": (1, 4),
    "deepface/img17.jpg": (1, 2),
    "deepface/img31.jpg": (1, 3),
    "deepface/img38.jpg": (1, 4),
    "deepface/img40.jpg": (1, 5),
    "deepface/img41.jpg": (1, 3),
    "deepface/img50.jpg": (1, 2),
    "deepface/img54.jpg": (1, 6),
    "deepface/img55.jpg": (1, 3),
    "deepface/img59.jpg": (2, 2),  # a man in profile cut by the left edge
    "deepface/img62.jpg": (1, 3),
    "deepface/selfie-many-people.jpg": (7, 7),
}
PHOTO_COUNT = 67
# Faces the tiled search (128 px tiles, 50% overlap) reported before, for photos where that was not 1.
TILED_SEARCH_FOUND = {
    "blazeface/3faces.png": 3,
    "blazeface/4faces.png": 3,
    "deepface/couple.jpg": 2,
    "deepface/img37.jpg": 2,  # one of them the "abc" logo
    "deepface/selfie-many-people.jpg": 4,
}


def _photos(shared_data: Path) -> list[str]:
    names = sorted(str(p.relative_to(shared_data / "photos")) for p in (shared_data / "photos").glob("*/*"))
    assert len(names) == PHOTO_COUNT, "the development photos changed: count the new ones by hand"
    return names


def _found(certain: int, most: int, detected: int) -> tuple[int, int]:
    """(faces found, false detections) judged from counts: detections up to `certain` are taken as found."""
    return min(detected, certain), max(0, detected - most)


@pytest.fixture(scope="module")
def detected(shared_data: Path) -> dict[str, int]:
    detector = FaceDetector()
    return {
        name: len(detector.detect(load_image(shared_data / "photos" / name))) for name in _photos(shared_data)
    }


def test_recall_and_false_detections_on_the_hand_count(detected: dict[str, int]) -> None:
    found = {name: _found(*HAND_COUNT.get(name, (1, 1)), n) for name, n in detected.items()}
    recall = sum(f for f, _ in found.values()) / sum(HAND_COUNT.get(n, (1, 1))[0] for n in detected)
    false = sum(x for _, x in found.values())
    # Measured: 79 of 80 faces (the tiled search: 75), no false detection (the tiled search: 1).
    assert recall >= 79 / 80 and false == 0, {
        n: f for n, f in found.items() if f != (HAND_COUNT.get(n, (1, 1))[0], 0)
    }


def test_no_photo_loses_a_face_the_tiled_search_found(detected: dict[str, int]) -> None:
    for name, n in detected.items():
        certain, most = HAND_COUNT.get(name, (1, 1))
        before, _ = _found(certain, most, TILED_SEARCH_FOUND.get(name, 1))
        assert _found(certain, most, n)[0] >= before, name


def test_the_issue_targets(detected: dict[str, int]) -> None:
    assert (
        detected["blazeface/4faces.png"] == 4
    )  # the fourth, a blurred face of 10 px, by the full-range model
    assert detected["deepface/selfie-many-people.jpg"] >= 6  # the selfie-taker and two faces cut by the edges
