"""The coin backbone's training: a tiny run learns, stops, resumes exactly where it stopped, exports."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from mlcore.coin_views import augment, load_images
from mlcore.dataset import hash_unit, type_key
from mlcore.train_backbone import (
    SPLIT_SEED,
    Settings,
    Split,
    Trainer,
    imagenet_features,
    losses,
    run,
)

TINY = {"input_size": 64, "epochs": 2, "batch_pairs": 4, "warmup_steps": 2, "seed": 0}


@pytest.fixture(scope="module")
def records(ans_dir):
    from mlcore.dataset import load_ans_layout

    return load_ans_layout(ans_dir, limit=10)


@pytest.fixture
def weights(tmp_path):
    """An untrained MobileNetV2 in the ImageNet file's layout: these tests need no models folder."""
    torch.manual_seed(0)
    path = tmp_path / "imagenet.pt"
    torch.save(torchvision.models.mobilenet_v2(weights=None).features.state_dict(), path)
    return path


def test_types_split_by_a_seeded_hash_into_nested_shares(records):
    split = Split.of(records)
    keys = {type_key(r) for r in records}
    assert split.train | split.val | split.test == keys
    assert not (split.train & split.val or split.train & split.test or split.val & split.test)
    for key in split.train:
        assert hash_unit(SPLIT_SEED, "split", key) < 0.6
    assert Split.of(records, all_types=True).train == keys


def test_augmentation_is_seeded_and_keeps_the_disc(records, tmp_path):
    images = load_images(records[:2], tmp_path / "cutouts.npz", progress=None)
    a = augment(images.pixels[0], np.random.default_rng(3), 96)
    b = augment(images.pixels[0], np.random.default_rng(3), 96)
    assert a.shape == (96, 96) and np.array_equal(a, b)
    assert a[0, 0] == 128.0 and a[-1, -1] == 128.0  # outside the coin's disc: neutral, as the embedding sees it
    cached = load_images(records[:2], tmp_path / "cutouts.npz", progress=None)  # the second time from the cache
    assert np.array_equal(cached.pixels, images.pixels)


def test_the_losses_reward_views_near_their_class():
    settings = Settings()
    labels = torch.tensor([0, 0, 1, 1])
    proxies = torch.eye(2, 8)
    near = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.1] + [0] * 6, [1.0, -0.1] + [0] * 6, [0.1, 1.0] + [0] * 6, [-0.1, 1.0] + [0] * 6]), dim=1
    )
    far = near[[2, 3, 0, 1]]
    near_losses, far_losses = losses(near, labels, proxies, settings), losses(far, labels, proxies, settings)
    assert near_losses[0] < far_losses[0]  # proxy term: each view at its own class's proxy
    assert near_losses[1] < 1.0 and losses(near[[0, 2, 1, 3]], labels, proxies, settings)[1] > near_losses[1]


def test_a_few_steps_lower_the_loss(records, weights, tmp_path):
    images = load_images(records, tmp_path / "cutouts.npz", progress=None)
    rows = np.arange(len(images.record))
    trainer = Trainer(images, rows, imagenet_features(weights), Settings(**{**TINY, "epochs": 6}))
    trainer.init_proxies()
    first = [trainer.train_step()["loss"] for _ in range(3)]
    for _ in range(12):
        trainer.train_step()
    last = [trainer.train_step()["loss"] for _ in range(3)]
    assert np.mean(last) < np.mean(first)


def test_a_stopped_run_resumes_exactly_and_exports_loadable_weights(records, weights, tmp_path):
    from mlcore.backbone import load_torch_features

    settings = Settings(**TINY, all_types=True)
    quiet = {"weights": weights, "validate_every": 0, "log": lambda _: None}
    straight = run(records, out=tmp_path / "a", settings=settings, **quiet)
    assert straight["done"] and (tmp_path / "a" / "features.pt").exists()
    steps = straight["step"]
    half = run(records, out=tmp_path / "b", settings=settings, max_steps=steps // 2, **quiet)
    assert not half["done"] and half["step"] == steps // 2
    resumed = run(records, out=tmp_path / "b", settings=settings, **quiet)
    assert resumed["done"] and resumed["step"] == steps
    a = torch.load(tmp_path / "a" / "features.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "features.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    start = torch.load(weights, weights_only=True)
    assert not torch.equal(a["0.0.weight"], start["0.0.weight"])  # it trained the whole network
    network = load_torch_features(tmp_path / "a" / "features.pt")  # the product's loader reads it
    assert network(torch.zeros(1, 3, 64, 64)).shape == (1, 1280, 2, 2)
    with pytest.raises(ValueError, match="other settings"):
        run(records, out=tmp_path / "b", settings=Settings(**{**TINY, "lr": 1e-3}, all_types=True), **quiet)
    # A run may be lengthened (or cut short, not below what it has done): the schedule follows.
    longer = run(records, out=tmp_path / "b", settings=Settings(**{**TINY, "epochs": 3}, all_types=True), **quiet)
    assert longer["done"] and longer["step"] == steps * 3 // 2
    with pytest.raises(ValueError, match="other settings"):
        run(records, out=tmp_path / "b", settings=Settings(**{**TINY, "epochs": 1}, all_types=True), **quiet)


def test_a_finished_run_is_published_with_its_manifest_and_set_up_from_there(records, weights, tmp_path, monkeypatch):
    import hashlib
    import json

    from mlcore import setup_models
    from mlcore.backbone import COINS
    from mlcore.modelfiles import check_file
    from mlcore.train_backbone import publish

    settings = Settings(**{**TINY, "epochs": 1})
    run(records, out=tmp_path / "run", settings=settings, weights=weights, validate_every=1, log=lambda _: None)
    entry = publish(
        tmp_path / "run", tmp_path / "weights", command="python -m mlcore.train_backbone …", records=records
    )
    published = tmp_path / "weights" / COINS.filename
    assert entry["sha256"] == hashlib.sha256(published.read_bytes()).hexdigest()
    manifest = json.loads((tmp_path / "weights" / "manifest.json").read_text())["models"]
    assert [e["name"] for e in manifest] == [COINS.name] and manifest[0]["command"].startswith("python -m")
    assert manifest[0]["data"]["types"]["test"] == len(Split.of(records).test)
    assert [row["epoch"] for row in manifest[0]["validation"]] == [0, 1]  # the curve, from before training on
    assert "ODbL" in manifest[0]["licence"]
    # The setup step copies it into a models folder, where the backbone finds it by name.
    monkeypatch.setattr(setup_models, "PROJECT_WEIGHTS", tmp_path / "weights")
    models = tmp_path / "models"
    models.mkdir()
    (copied,) = setup_models._prepare_project_weights(models, verbose=False)
    (models / "manifest.json").write_text(json.dumps({"models": [copied]}))
    assert check_file(models, COINS.name).read_bytes() == published.read_bytes()
