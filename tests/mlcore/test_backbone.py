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


@pytest.mark.parametrize("weights", ["imagenet", "coins"])
def test_the_onnx_graph_gives_the_torch_networks_maps_at_every_tap(weights):
    from mlcore.backbone import MAP_LAYERS, Backbone, to_tensor

    backbone = Backbone(MODELS, weights=weights)
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


def test_the_committed_coin_weights_match_their_manifest_and_embed_a_real_coin(ans_dir):
    """The project's own backbone (mlcore/weights): the file its manifest describes, set up, and a real embedding."""
    import json

    from mlcore.backbone import COINS
    from mlcore.cutout import catalogue_cutout
    from mlcore.dataset import load_ans_layout
    from mlcore.embed import RECIPES, Embedder
    from mlcore.modelfiles import check_file, sha256_of
    from mlcore.setup_models import PROJECT_WEIGHTS

    (entry,) = [
        e for e in json.loads((PROJECT_WEIGHTS / "manifest.json").read_text())["models"] if e["name"] == COINS.name
    ]
    committed = PROJECT_WEIGHTS / entry["filename"]
    assert sha256_of(committed) == entry["sha256"] and committed.stat().st_size == entry["size"] <= 25 * 2**20
    assert entry["command"].startswith("python -m mlcore.train_backbone") and entry["data"]["types"]["test"] > 0
    assert entry["validation"][-1]["epoch"] == entry["settings"]["epochs"]  # the whole run, its curve recorded
    try:
        prepared = check_file(MODELS, COINS.name)
    except ModelFileError as exc:
        pytest.skip(f"models folder not prepared: {exc}")
    assert sha256_of(prepared) == entry["sha256"]  # make models copied exactly this file
    (record,) = load_ans_layout(ans_dir, limit=1)
    cutouts = [catalogue_cutout(Image.open(path)) for path in record.images.values()]
    coins = Embedder(MODELS, config=RECIPES["coins"], use_trained=False).embed(cutouts)
    imagenet = Embedder(MODELS, config=RECIPES["imagenet"], use_trained=False).embed(cutouts)
    assert coins.shape == (2, 1280) and np.isfinite(coins).all()
    assert np.allclose(np.linalg.norm(coins, axis=1), 1.0, atol=1e-4)
    assert float(coins[0] @ imagenet[0]) < 0.99  # other weights: another description of the same coin
