"""Aletheia: deepfake detection for faces in photos.

from aletheia import DeepfakeDetectorPipeline
result = DeepfakeDetectorPipeline(model_checkpoint="weights.pth").predict("photo.jpg")
"""

import os

# albumentations checks for updates over the network on import unless told not to.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"

__all__ = ["DeepfakeDetectorPipeline", "FaceResult", "ImageResult", "InputError", "__version__"]


def __getattr__(name: str):
    # Lazy, so `import aletheia` (and the CLI's --help) stays fast: torch loads only when a pipeline is wanted.
    if name == "DeepfakeDetectorPipeline":
        from aletheia.pipeline import DeepfakeDetectorPipeline

        return DeepfakeDetectorPipeline
    if name in ("FaceResult", "ImageResult"):
        from aletheia import results

        return getattr(results, name)
    if name == "InputError":
        from aletheia.io import InputError

        return InputError
    raise AttributeError(f"module 'aletheia' has no attribute {name!r}")
