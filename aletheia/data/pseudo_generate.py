"""Pseudo-generated faces: real face crops given the upsampling traces of an image generator, made on the fly.

GAN and diffusion decoders build an image by upsampling feature maps (transposed convolutions, or nearest-neighbour
resizing followed by a convolution). Every output pixel's phase within the 2x grid gets its own effective kernel,
which leaves a faint periodic pattern and peaks in the spectrum that natural resampling (bilinear, area) does not
(Zhang, Karaman & Chang, "Detecting and Simulating Artifacts in GAN Fake Images", 2019). Here the low frequencies of
a real crop are rebuilt through a chain of such upsamplers with random kernels and its own fine detail is put back,
so the face stays as sharp as it was and only the upsampling trace marks it: a detector trained on these learns
that trace rather than one generator's fingerprint, and cannot learn "blurry means generated".

Random, untrained kernels rather than a decoder trained here: each draw is a different "generator", the trace is
all that is shared between them, and nothing has to be trained or shipped.
"""

from __future__ import annotations

import cv2
import numpy as np


def _random_kernel(rng: np.random.Generator) -> np.ndarray:
    """A random centred 3x3 kernel summing to about 1 (a learnt smoothing filter, with a slightly wrong gain)."""
    kernel = np.abs(rng.normal(1.0, 0.5, size=(3, 3))).astype(np.float32)
    kernel[1, 1] += rng.uniform(0.0, 3.0)
    return kernel / kernel.sum() * (1.0 + rng.normal(0.0, 0.02))


def _transposed_conv_2x(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """2x upsampling as a stride-2 transposed convolution: each of the four output phases is the input filtered
    by its own kernel, then the four are interleaved; mixed with a smooth resize by a random share, as a trained
    layer lies between the two."""
    h, w = image.shape[:2]
    phases = np.empty((2 * h, 2 * w, image.shape[2]), dtype=np.float32)
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        phases[dy::2, dx::2] = cv2.filter2D(image, -1, _random_kernel(rng), borderType=cv2.BORDER_REFLECT)
    smooth = cv2.resize(image, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR)
    share = rng.uniform(0.3, 0.9)
    return smooth + share * (phases - smooth)


def _nearest_conv_2x(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """2x nearest-neighbour resize followed by a random normalised 3x3 convolution (a diffusion VAE's upsampler)."""
    up = cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    return cv2.filter2D(up, -1, _random_kernel(rng), borderType=cv2.BORDER_REFLECT)


def pseudo_generate(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A pseudo-generated face from one real crop (RGB uint8, any size): same content, a generator's upsampling."""
    h, w = crop.shape[:2]
    levels = int(rng.choice([1, 2, 2, 3]))
    factor = 2**levels
    small_w, small_h = max(1, w // factor), max(1, h // factor)
    image = crop.astype(np.float32)
    base = cv2.resize(image, (small_w, small_h), interpolation=cv2.INTER_AREA)
    natural = cv2.resize(base, (w, h), interpolation=cv2.INTER_LINEAR)
    generated = base
    for _ in range(levels):
        upsample = _transposed_conv_2x if rng.random() < 0.5 else _nearest_conv_2x
        generated = upsample(generated, rng)
    if generated.shape[:2] != (h, w):  # sizes not divisible by the factor
        generated = cv2.resize(generated, (w, h), interpolation=cv2.INTER_LINEAR)
    # The crop's own detail on top, a little weakened as a generator's fine texture is smoother than a photo's.
    detail = (image - natural) * rng.uniform(0.6, 1.0)
    return np.clip(generated + detail, 0, 255).astype(np.uint8)
