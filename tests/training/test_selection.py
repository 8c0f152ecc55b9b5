"""The validation loss that chooses checkpoints: balanced over the groups trained on, blind to left-out ones."""

import numpy as np
import pandas as pd
import pytest

from aletheia.data.dataset import FaceCropDataset
from aletheia.training.loop import selection_weights, trained_groups


def _faces(rows: list[tuple[str, str, str, int]]) -> pd.DataFrame:
    """(label, source, method, count) blocks of faces; crops are never read."""
    records = [
        {"crop": f"{source}-{i}.png", "label": label, "source": source, "method": method}
        for label, source, method, count in rows
        for i in range(count)
    ]
    return pd.DataFrame(records)


VAL = _faces([
    ("real", "utk", "utk real", 80),
    ("real", "ffpp", "ffpp real", 10),
    ("fake", "ffpp", "Deepfakes", 5),
    ("fake", "ffpp", "FaceSwap", 20),
    ("fake", "stylegan", "StyleGAN3", 30),
])  # fmt: skip


def test_left_out_method_and_fake_only_source_do_not_choose_the_checkpoint() -> None:
    train = FaceCropDataset(_faces([
        ("real", "utk", "utk real", 5), ("real", "ffpp", "ffpp real", 5),
        ("fake", "ffpp", "Deepfakes", 5), ("fake", "stylegan", "StyleGAN3", 5),
    ]))  # fmt: skip
    trained = trained_groups(train, "source")
    assert "fake: StyleGAN3" not in trained  # no reals in its source: `balance: source` never draws it
    assert "fake: StyleGAN3" in trained_groups(train, "method")

    val = FaceCropDataset(VAL)
    weights = selection_weights(val, trained)
    by_group = pd.Series(weights).groupby(val.groups).sum()
    assert weights.sum() == pytest.approx(1.0)
    assert by_group["fake: FaceSwap"] == 0 and by_group["fake: StyleGAN3"] == 0
    # Half the weight to each class, shared equally by its groups however many faces each has.
    assert by_group["fake: Deepfakes"] == pytest.approx(0.5)
    assert by_group["real: utk"] == pytest.approx(0.25) and by_group["real: ffpp"] == pytest.approx(0.25)


def test_without_any_trained_group_in_validation_every_face_counts() -> None:
    val = FaceCropDataset(VAL)
    weights = selection_weights(val, {"fake: something else"})
    assert weights.sum() == pytest.approx(1.0) and np.all(weights > 0)
