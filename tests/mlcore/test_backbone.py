"""The pretrained backbone: batch norms folded into the convolutions compute the same function."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from mlcore.backbone import fold_batch_norms
from mlcore.modelfiles import ModelFileError

MODELS = Path(__file__).resolve().parents[2] / "var" / "models"


def _network_with_real_statistics() -> torch.nn.Module:
    """MobileNetV2 features whose batch norms are far from identity (as trained ones are)."""
    torch.manual_seed(0)
    network = torchvision.models.mobilenet_v2(weights=None).features.eval()
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 2.0)
            module.bias.data.uniform_(-0.5, 0.5)
    return network


def test_folding_removes_every_batch_norm_and_keeps_the_outputs():
    network = _network_with_real_statistics()
    images = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        expected = network(images)
        folded = fold_batch_norms(network)
        got = folded(images)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_the_loaded_backbone_is_folded_and_channels_last():
    from mlcore.backbone import Backbone

    backbone = Backbone(MODELS)
    try:
        network = backbone.module
    except ModelFileError as exc:
        pytest.skip(f"models folder not prepared: {exc}")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())
    first = network[0][0].weight
    assert first.is_contiguous(memory_format=torch.channels_last)
    features = backbone.features([Image.new("RGB", (64, 64), (90, 120, 60))])
    assert features.shape == (1, 1280) and (features >= 0).all()


def test_the_onnx_graph_gives_the_torch_networks_maps_at_every_tap():
    from mlcore.backbone import MAP_LAYERS, Backbone, to_tensor

    backbone = Backbone(MODELS)
    try:
        backbone.ensure_loaded()
    except ModelFileError as exc:
        pytest.skip(f"models folder not prepared: {exc}")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (200, 180, 3), dtype=np.uint8)) for _ in range(2)]
    batch = to_tensor(images, 256)
    maps = backbone.maps(batch, MAP_LAYERS)
    with torch.inference_mode():
        x = batch
        for index, block in enumerate(backbone.module):
            x = block(x)
            if index in MAP_LAYERS:
                expected = x.contiguous()
                assert maps[index].shape == expected.shape, index
                assert torch.allclose(maps[index], expected, atol=1e-4 * float(expected.abs().max())), index
    with pytest.raises(ValueError, match="not outputs"):
        backbone.maps(batch, (5,))
