"""Embeddings: shape and normalisation, the learned projection, and retrieving a phone photo of a coin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mlcore.embed import (
    EMBED_DIM,
    EmbedConfig,
    Embedder,
    Projection,
    gem,
    global_descriptors,
    grid_gem,
    l2n,
    prepare,
    projection_fit,
)
from mlcore.modelfiles import ModelFileError

MODELS = Path(__file__).resolve().parents[2] / "var" / "models"


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    model = Embedder(MODELS, use_trained=False)
    try:
        model.ensure_loaded()
    except ModelFileError as exc:
        pytest.skip(f"models folder not prepared: {exc}")
    return model


def _coin(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (384, 384), (128, 128, 128))
    draw = ImageDraw.Draw(image)
    draw.ellipse([10, 10, 374, 374], fill=tuple(int(v) for v in rng.integers(60, 200, 3)))
    for _ in range(6):
        x, y = rng.integers(60, 300, 2)
        draw.rectangle([x, y, x + 40, y + 15], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return image


class TestPieces:
    def test_gem_with_p_one_is_average_pooling_and_larger_p_favours_peaks(self):
        maps = torch.rand(2, 3, 4, 4)
        assert torch.allclose(gem(maps, 1.0), maps.mean(dim=(2, 3)))
        assert torch.all(gem(maps, 3.0) >= maps.mean(dim=(2, 3)) - 1e-6)

    def test_grid_pooling_keeps_where_a_response_is(self):
        top_left = torch.zeros(1, 3, 8, 8)
        top_left[0, 1, 1, 1] = 5.0
        bottom_right = torch.zeros(1, 3, 8, 8)
        bottom_right[0, 1, 6, 6] = 5.0
        assert torch.allclose(gem(top_left), gem(bottom_right))  # a global pool cannot tell them apart
        a, b = grid_gem(top_left, 2), grid_gem(bottom_right, 2)
        assert a.shape == (1, 12)
        assert not torch.allclose(a, b)
        assert float(a[0, 1]) > float(a[0, 10]) and float(b[0, 10]) > float(b[0, 1])  # cell 0 vs cell 3, channel 1
        assert torch.allclose(grid_gem(top_left, 1), gem(top_left))

    def test_the_whole_coin_descriptor_is_recovered_exactly_from_the_grid_descriptor(self):
        maps = torch.rand(3, 320, 8, 8) * 4
        config = EmbedConfig(layer=17, grid=2)
        grid = l2n(grid_gem(maps, 2).sqrt().numpy())  # as Embedder.descriptors makes them
        whole = l2n(gem(maps).sqrt().numpy())
        assert np.allclose(global_descriptors(grid, config), whole, atol=1e-5)
        turned = l2n(grid_gem(torch.rot90(maps, 1, dims=(2, 3)), 2).sqrt().numpy())
        assert not np.allclose(turned, grid, atol=1e-3)  # the grid descriptor depends on the turn...
        assert np.allclose(global_descriptors(turned, config), whole, atol=1e-5)  # ...the whole-coin one not

    def test_a_recipe_names_its_layer_and_grid_and_must_fit_the_column(self):
        assert EmbedConfig(layer=17, grid=2).dim == EMBED_DIM
        assert "-l17g2" in EmbedConfig(layer=17, grid=2).tag()
        assert "-l18g1" not in EmbedConfig(layer=18, grid=1).tag()
        with pytest.raises(ValueError, match="1280"):
            EmbedConfig(layer=18, grid=2)
        with pytest.raises(ValueError):
            EmbedConfig(layer=5)

    def test_prepare_is_greyscale_and_neutral_outside_the_disc(self):
        prepared = np.asarray(prepare(_coin(0), EmbedConfig(input_size=128)))
        assert prepared.shape == (128, 128, 3)
        assert np.array_equal(prepared[..., 0], prepared[..., 1])
        assert tuple(prepared[0, 0]) == (128, 128, 128)

    def test_learned_whitening_shrinks_the_direction_matches_differ_in(self):
        rng = np.random.default_rng(0)
        identity = rng.normal(size=(200, 8))
        nuisance = np.zeros((200, 8))
        nuisance[:, 0] = rng.normal(scale=5.0, size=200)  # lighting-like: big, meaningless
        anchors, positives = identity, identity + nuisance
        projection = projection_fit(anchors, positives, dim=8, shrinkage=0.01)
        a, p = projection.apply(anchors), projection.apply(positives)
        others = np.roll(p, 1, axis=0)
        assert np.mean(np.sum(a * p, axis=1)) > np.mean(np.sum(a * others, axis=1)) + 0.5
        raw_a, raw_p = (
            anchors / np.linalg.norm(anchors, axis=1, keepdims=True),
            positives / np.linalg.norm(positives, axis=1, keepdims=True),
        )
        assert np.mean(np.sum(a * p, axis=1)) > np.mean(np.sum(raw_a * raw_p, axis=1))

    def test_a_projection_round_trips_through_its_file(self, tmp_path):
        projection = Projection(np.arange(4, dtype=np.float32), np.eye(4, 2, dtype=np.float32), tag="lw2")
        loaded = Projection.load(projection.save(tmp_path / "embed.npz"))
        assert loaded.tag == "lw2"
        assert np.array_equal(loaded.matrix, projection.matrix)


class TestEmbedder:
    def test_embeddings_are_l2_normalised_with_embed_dim(self, embedder):
        vectors = embedder.embed([_coin(1), _coin(2)])
        assert vectors.shape == (2, EMBED_DIM)
        assert vectors.dtype == np.float32
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert not np.allclose(vectors[0], vectors[1])

    def test_a_projection_is_padded_to_embed_dim_and_named_in_the_version(self, embedder):
        rng = np.random.default_rng(0)
        projection = Projection(np.zeros(1280, np.float32), rng.normal(size=(1280, 64)).astype(np.float32), tag="t64")
        projected = Embedder(MODELS, projection=projection, backbone=embedder.backbone)
        vectors = projected.embed([_coin(3)])
        assert vectors.shape == (1, EMBED_DIM)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert np.all(vectors[:, 64:] == 0)
        assert projected.version.endswith("+t64")
        assert embedder.version != projected.version


@pytest.mark.data
def test_a_rotated_blurred_photo_finds_its_coin_in_the_top_3_of_50(ans_dir, embedder):
    from PIL import ImageFilter

    from mlcore.cutout import catalogue_cutout, rotate_upright

    paths = sorted((ans_dir / "images").glob("*.obv.jpg"))[:50]
    catalogue = []
    for path in paths:
        with Image.open(path) as raw:
            catalogue.append(catalogue_cutout(raw))
    vectors = embedder.embed(catalogue)
    hits = []
    for target, angle in ((3, 37.0), (17, 151.0), (41, 290.0)):
        # A small, blurred, turned photo of the coin, darker than the studio shot...
        photo = rotate_upright(catalogue[target], angle).resize((150, 150), Image.Resampling.BILINEAR)
        photo = photo.filter(ImageFilter.GaussianBlur(1.2)).point(lambda v: int(v * 0.8))
        # ...turned back as the upright step would, with a residual error of 8°.
        query = embedder.embed([rotate_upright(photo, -angle + 8.0)])[0]
        ranking = np.argsort(-(vectors @ query))
        hits.append(target in ranking[:3])
    assert all(hits), hits


class TestProjectionFitFromReviews:
    """``projection_fit`` with weighted matching pairs and hard negatives (the review signal)."""

    @staticmethod
    def _data(seed: int = 0):
        rng = np.random.default_rng(seed)
        base = rng.normal(size=(300, 6))
        base[:, 2] *= 4.0  # a big spread that tells coins apart poorly
        base[:, 3] *= 0.5  # a small spread that is what tells look-alikes apart
        anchors = base
        positives = base + rng.normal(scale=0.05, size=base.shape)
        return rng, anchors, positives

    def test_unit_weights_and_no_negatives_give_the_plain_whitening(self):
        _, anchors, positives = self._data()
        plain = projection_fit(anchors, positives, dim=3)
        weighted = projection_fit(anchors, positives, dim=3, weights=np.ones(len(anchors)))
        assert np.allclose(np.abs(plain.matrix), np.abs(weighted.matrix), atol=1e-4)
        empty = projection_fit(anchors, positives, dim=3, negatives=(np.zeros((0, 6)), np.zeros((0, 6))))
        assert np.array_equal(plain.matrix, empty.matrix)

    def test_hard_negatives_keep_the_axis_that_separates_look_alikes(self):
        rng, anchors, positives = self._data()
        queries = rng.normal(size=(100, 6))
        wrong = queries.copy()
        wrong[:, 3] += rng.choice([-4.0, 4.0], size=100)  # look-alikes differ along axis 3 only
        plain = projection_fit(anchors, positives, dim=1, shrinkage=0.01)
        supervised = projection_fit(
            anchors, positives, dim=1, shrinkage=0.01, negatives=(queries, wrong), negative_share=0.9
        )

        def main_axis(projection):
            column = np.abs(projection.matrix[:, 0])
            return int(np.argmax(column / column.sum()))

        assert main_axis(plain) == 2
        assert main_axis(supervised) == 3

    def test_heavier_pairs_shrink_their_direction_more(self):
        rng, anchors, positives = self._data()
        positives = positives.copy()
        shifted = np.arange(len(anchors)) < 30  # a few pairs (reviewed photos) differ along axis 0
        positives[shifted, 0] += rng.normal(scale=3.0, size=int(shifted.sum()))
        light = projection_fit(anchors, positives, dim=6, shrinkage=0.01)
        heavy = projection_fit(anchors, positives, dim=6, shrinkage=0.01, weights=np.where(shifted, 20.0, 1.0))
        gain = [np.linalg.norm(p.matrix[0]) / np.linalg.norm(p.matrix[1]) for p in (light, heavy)]
        assert gain[1] < gain[0] * 0.7

    def test_it_refuses_weights_that_do_not_match_the_pairs(self):
        _, anchors, positives = self._data()
        with pytest.raises(ValueError):
            projection_fit(anchors, positives, weights=np.ones(3))


class _NoBackbone:
    """Stands in for the backbone where only the trained projection is under test."""

    def ensure_loaded(self):
        return True


def test_a_pinned_trained_version_is_used_instead_of_the_active_one(tmp_path):
    from mlcore import versions

    base = Embedder(tmp_path, use_trained=False, backbone=_NoBackbone()).base_version
    made = []
    for scale in (1.0, 2.0):
        version, staging = versions.version_start(tmp_path, fingerprint=str(scale))
        matrix = np.eye(4, dtype=np.float32) * scale
        Projection(mean=np.zeros(4, np.float32), matrix=matrix, tag="lw4").save(staging / "embed.npz")
        versions.version_commit(
            tmp_path, version, parts={"embedding-projection": "embed.npz"}, metrics={}, info={"embedding_recipe": base}
        )
        made.append(version)
    active = Embedder(tmp_path, backbone=_NoBackbone())
    pinned = Embedder(tmp_path, backbone=_NoBackbone(), pinned_version=made[0])
    assert active.version.endswith(f"@{made[1]}") and pinned.version.endswith(f"@{made[0]}")
    assert np.allclose(pinned.projection.matrix, np.eye(4)) and np.allclose(active.projection.matrix, 2 * np.eye(4))
