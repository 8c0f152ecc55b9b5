"""From prepared face crops to training batches: group-wise splits, balanced sampling, a torch Dataset."""

from __future__ import annotations

import hashlib
import re
import warnings

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset


def split_by_group(faces: pd.DataFrame, val_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Deterministic train/validation split in which every group (video, identity) lies wholly on one side.

    A group's side depends only on its name and the seed (a hash), so adding data never moves existing groups.
    """

    def bucket(group: str) -> float:
        digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    is_val = faces["group"].astype(str).map(bucket) < val_fraction
    return faces[~is_val].reset_index(drop=True), faces[is_val].reset_index(drop=True)


def sampling_weights(labels: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Per-sample draw probabilities giving each class half the draws and, with `groups` (e.g. methods), each group
    an equal share of its class's half, so one big source cannot stand for a whole class."""
    groups = np.zeros(len(labels), dtype=int) if groups is None else np.asarray(groups)
    weights = np.zeros(len(labels))
    for label in (0, 1):
        in_class = labels == label
        names = np.unique(groups[in_class])
        for name in names:
            members = in_class & (groups == name)
            weights[members] = 0.5 / len(names) / members.sum()
    return weights / weights.sum()


def epoch_indices(
    labels: np.ndarray,
    balance: str,
    epoch: int,
    seed: int,
    length: int | None = None,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """The sample order for one epoch. `sampler` draws real and fake equally often (with replacement for the
    smaller class), so the loss is not dominated by the larger class; `method` also gives every method (source of
    reals, manipulation of fakes) an equal share of its class; `none` is a plain shuffle."""
    rng = np.random.default_rng([seed, epoch])
    n = len(labels) if length is None else length
    if balance == "none":
        return rng.permutation(len(labels))[:n]
    weights = sampling_weights(labels, groups if balance == "method" else None)
    return rng.choice(len(labels), size=n, replace=True, p=weights)


def mix_in_self_blended(
    order: np.ndarray,
    labels: np.ndarray,
    fraction: float,
    epoch: int,
    seed: int,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Replace `fraction` of the fake draws by self-blended pseudo-fakes of random real faces.

    Index i < n is face i as it is; index n + j is a pseudo-fake made from real face j (see FaceCropDataset).
    The real faces are drawn with `weights` (e.g. balanced by source), so every real source also appears as fake.
    """
    if fraction <= 0:
        return order
    rng = np.random.default_rng([seed, epoch, 1])
    reals = np.flatnonzero(labels == 0)
    order = order.copy()
    swap = (labels[order] == 1) & (rng.random(len(order)) < fraction)
    p = None if weights is None else weights[reals] / weights[reals].sum()
    order[swap] = len(labels) + rng.choice(reals, size=int(swap.sum()), p=p)
    return order


# Training targets per face: which kind of face it is. The model's overall label is "fake" for both fake kinds.
REAL, MANIPULATED, GENERATED = 0, 1, 2
# Methods whose faces are generated whole rather than edited (StyleGAN3-R, "Stable Diffusion 2.1", "DALL-E 3", ...).
_GENERATED_METHOD = re.compile(
    r"(style)?gan\d?\b|diffusion|text-to-image|midjourney|dall-?e|firefly|imagen|flux|generated", re.IGNORECASE
)


BLEND_MASKS = ("ellipse", "landmarks")
LANDMARK_MIN_PRESENCE = 0.5  # face-mesh presence below which the mesh is not trusted and the ellipse is used


def fake_kind(method: str) -> int:
    """GENERATED for a method that makes whole faces (GAN, diffusion), else MANIPULATED (swap, reenactment, blend)."""
    return GENERATED if _GENERATED_METHOD.search(str(method)) else MANIPULATED


def face_kinds(faces: pd.DataFrame) -> np.ndarray:
    """REAL, MANIPULATED or GENERATED for every face, from its label and method (or a `fake_kind` column)."""
    if "fake_kind" in faces.columns:
        named = faces["fake_kind"].astype(str).str.lower().map({"manipulated": MANIPULATED, "generated": GENERATED})
    else:
        named = pd.Series(np.nan, index=faces.index)
    kinds = named.fillna(faces["method"].map(fake_kind)).to_numpy(dtype=np.int64)
    return np.where((faces["label"] == "fake").to_numpy(), kinds, REAL)


def balance_groups(faces: pd.DataFrame) -> np.ndarray:
    """What `balance: method` evens out: the source of each real face, the manipulation method of each fake."""
    is_fake = (faces["label"] == "fake").to_numpy()
    return np.where(is_fake, "fake: " + faces["method"].astype(str), "real: " + faces["source"].astype(str))


def sources_with_reals(labels: np.ndarray, sources: np.ndarray) -> list[str]:
    """The sources `balance: source` can draw from: only those with real faces can be half real, half fake."""
    return [str(name) for name in np.unique(sources) if (labels[sources == name] == 0).any()]


def source_balanced_indices(
    labels: np.ndarray,
    sources: np.ndarray,
    groups: np.ndarray,
    self_blend: float,
    epoch: int,
    seed: int,
    length: int | None = None,
    pseudo_generate: float = 0.0,
    source_shares: dict[str, float] | None = None,
) -> np.ndarray:
    """Draws in which every source (dataset of origin) has an equal share and is itself half real, half fake, so
    knowing the dataset says nothing about the label. `source_shares` weighs named sources against the others' 1
    (2: drawn twice as often), each still half real, half fake.

    A source's fake draws are, with probability `pseudo_generate`, pseudo-generated faces of its real faces (index
    2n + j); else its own fakes (methods equally often) or, with probability `self_blend` and always for a source
    without fakes, self-blended pseudo-fakes of its real faces (index n + j, as `mix_in_self_blended`). A source
    without real faces cannot be balanced and is left out: training on it would teach "this dataset is fake" (pair
    it with the source of its real counterpart instead, e.g. a generator with the faces it was trained on).
    """
    rng = np.random.default_rng([seed, epoch, 2])
    n = len(labels) if length is None else length
    names = sources_with_reals(labels, sources)
    if fake_only := sorted(set(np.unique(sources)) - set(names)):
        warnings.warn(f"balance 'source' leaves out sources without real faces: {fake_only}", stacklevel=2)
    if not names:
        raise ValueError("balance 'source' needs real faces")
    if unknown := sorted(set(source_shares or {}) - set(names)):
        raise ValueError(f"source shares name sources not drawn from: {unknown}")
    if source_shares:
        weights = np.array([source_shares.get(name, 1.0) for name in names], dtype=float)
        source_of_draw = rng.choice(len(names), size=n, p=weights / weights.sum())
    else:  # drawn as before shares existed, so earlier runs stay reproducible
        source_of_draw = rng.integers(len(names), size=n)
    wants_fake = rng.random(n) < 0.5
    wants_blend = rng.random(n) < self_blend
    # Drawn separately from the other choices, so a run without pseudo-generated faces draws as it always did.
    wants_generated = np.random.default_rng([seed, epoch, 3]).random(n) < pseudo_generate
    order = np.empty(n, dtype=np.int64)
    for k, name in enumerate(names):
        reals = np.flatnonzero((sources == name) & (labels == 0))
        fakes = np.flatnonzero((sources == name) & (labels == 1))
        here = source_of_draw == k
        real_draws = here & ~wants_fake
        blended = here & wants_fake & (wants_blend | (len(fakes) == 0))
        manipulated = here & wants_fake & ~blended
        order[real_draws] = rng.choice(reals, size=int(real_draws.sum()))
        order[blended] = len(labels) + rng.choice(reals, size=int(blended.sum()))
        if manipulated.any():
            weights = sampling_weights(labels[fakes], groups[fakes])  # every method of the source alike
            order[manipulated] = rng.choice(fakes, size=int(manipulated.sum()), p=weights)
        generated = here & wants_fake & wants_generated
        if generated.any():
            order[generated] = 2 * len(labels) + rng.choice(reals, size=int(generated.sum()))
    return order


def epoch_order(
    labels: np.ndarray,
    groups: np.ndarray,
    balance: str,
    self_blend: float,
    epoch: int,
    seed: int,
    length: int | None = None,
    sources: np.ndarray | None = None,
    pseudo_generate: float = 0.0,
    source_shares: dict[str, float] | None = None,
) -> np.ndarray:
    """One epoch's draws as training takes them: `source` balance (`source_balanced_indices`), or balanced by
    `epoch_indices` and then `self_blend` of the fake draws swapped for pseudo-fakes, made from every real source
    equally under `balance: method`. Pseudo-generated faces need `balance: source`."""
    if balance == "source":
        if sources is None:
            raise ValueError("balance 'source' needs the source of every face")
        return source_balanced_indices(
            labels, sources, groups, self_blend, epoch, seed, length, pseudo_generate, source_shares
        )
    if pseudo_generate > 0 or source_shares:
        raise ValueError("pseudo_generate and source_shares need balance 'source'")
    order = epoch_indices(labels, balance, epoch, seed, length, groups)
    source_weights = sampling_weights(labels, groups) if balance == "method" else None
    return mix_in_self_blended(order, labels, self_blend, epoch, seed, source_weights)


class FaceCropDataset(Dataset):
    """Cached crops (RGB uint8, already model-sized) with their kind: REAL (0), MANIPULATED (1) or GENERATED (2), so
    `kind > 0` means fake; augmentation optional.

    Indices n..2n-1 (n = len(self)) give self-blended pseudo-fakes (MANIPULATED) of the real face at `index - n`;
    indices 2n..3n-1 pseudo-generated faces (GENERATED) of the real face at `index - 2n`. `sources` overrides the
    faces' source for balancing (sources paired by domain).
    """

    def __init__(
        self,
        faces: pd.DataFrame,
        augment=None,
        seed: int = 0,
        retouch: float = 0.0,
        sources: np.ndarray | None = None,
        blend_mask: str = "ellipse",
        pseudo_decoders: str | None = None,
        reframe: float = 0.0,
    ) -> None:
        self.paths = faces["crop"].tolist()
        self.labels = (faces["label"] == "fake").to_numpy(dtype=np.int64)
        self.kinds = face_kinds(faces)
        self.groups = balance_groups(faces)
        self.sources = faces["source"].astype(str).to_numpy() if sources is None else np.asarray(sources)
        self.augment = augment
        self.faces = faces.reset_index(drop=True)
        self.seed = seed
        self.retouch = retouch  # share of draws, of either class, given a beauty filter on the face
        self.reframe = reframe  # share of draws, of either class, zoomed so the face fills a random share of the crop
        if blend_mask not in BLEND_MASKS:
            raise ValueError(f"blend_mask must be one of {BLEND_MASKS}, got {blend_mask!r}")
        self.blend_mask = blend_mask
        self._landmarker = None  # loaded on first use, in the process that draws (a DataLoader worker)
        self.pseudo_decoders = pseudo_decoders  # trained decoders' weights: pseudo-generated faces made by them
        self._decoders = None

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, index: int) -> np.ndarray:
        image = cv2.imread(self.paths[index], cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"cannot read cached crop {self.paths[index]}: re-run `aletheia prepare`")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def face_box(self, index: int) -> np.ndarray:
        """Where the detected face lies inside its cached crop (crop pixels), e.g. to place a mask on the face."""
        from aletheia.faces.extract import box_in_crop

        row = self.faces.iloc[index]
        box = np.array([row["x0"], row["y0"], row["x1"], row["y1"]], dtype=np.float64)
        return box_in_crop(
            int(row["height"]), int(row["width"]), box, row["face_policy"], int(row["crop_size"])
        )

    def _self_blend(self, image: np.ndarray, face: int, rng: np.random.Generator) -> np.ndarray:
        """A self-blended pseudo-fake: under SBI's landmark-hull mask (`blend_mask: landmarks`) where the face mesh
        finds the face, else under the ellipse fitted to the face box."""
        from aletheia.data.self_blend import self_blend, self_blend_with_landmarks

        box = self.face_box(face)
        if self.blend_mask == "landmarks":
            if self._landmarker is None:
                from aletheia.faces.landmarks import FaceLandmarker

                self._landmarker = FaceLandmarker()
            points, presence = self._landmarker.detect(image, box)
            if presence >= LANDMARK_MIN_PRESENCE:
                return self_blend_with_landmarks(image, points[:, :2], rng)
        return self_blend(image, box, rng)

    def _pseudo_generate(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A pseudo-generated face: through a trained decoder (`pseudo_decoders`) or random upsampling kernels."""
        from aletheia.data.pseudo_generate import pseudo_generate

        if self.pseudo_decoders is None:
            return pseudo_generate(image, rng)
        from aletheia.data.face_decoder import decoder_generate, load_decoders

        if self._decoders is None:
            self._decoders = load_decoders(self.pseudo_decoders)
        return decoder_generate(image, self._decoders, rng)

    def _rng(self, draw: int, stream: int) -> np.random.Generator:
        # Differs per draw, per epoch's worker seed and per use, so no two draws share their random choices.
        return np.random.default_rng([self.seed, draw, torch.initial_seed() % 2**32, stream])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from aletheia.data.framing import reframe
        from aletheia.data.retouch import retouch_face

        made, face = divmod(index, len(self))  # 0: the face itself, 1: self-blended, 2: pseudo-generated
        image = self._read(face)
        if made == 1:
            image, label = self._self_blend(image, face, self._rng(index, 0)), MANIPULATED
        elif made == 2:
            image, label = self._pseudo_generate(image, self._rng(index, 0)), GENERATED
        else:
            label = int(self.kinds[index])
        if self.retouch > 0:
            rng = self._rng(index, 1)
            if rng.random() < self.retouch:
                image = retouch_face(image, self.face_box(face), rng)
        if self.reframe > 0:
            rng = self._rng(index, 2)
            if rng.random() < self.reframe:
                image = reframe(image, self.face_box(face), rng)
        if self.augment is not None:
            image = self.augment(image=image)["image"]
        return torch.from_numpy(np.ascontiguousarray(image)), label
