"""A seeded fuzz of image decoding: a few hundred mutants of every format; each decodes or is an InputError.

benchmarks/fuzz_inputs.py runs the same mutants by the thousand, and odd videos.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.fuzzing import check_image, check_video, mutants, odd_videos, seed_images

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about corrupt EXIF

SEEDS = seed_images()
# The server's kind of budget, smaller: a mutant declaring a huge size is refused or read reduced, and stays quick.
BUDGET = 4_000_000


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_mutants_decode_or_are_input_errors(name: str) -> None:
    rng = np.random.default_rng(sorted(SEEDS).index(name))
    outcomes = [check_image(data, BUDGET) for data in mutants(SEEDS[name], 200, rng)]
    assert "input_error" in outcomes, "the mutants do reach the error paths"


def test_odd_videos_decode_or_are_input_errors(tmp_path) -> None:
    outcomes = [check_video(path) for path in odd_videos(tmp_path, 24, np.random.default_rng(0))]
    assert "ok" in outcomes and "input_error" in outcomes
