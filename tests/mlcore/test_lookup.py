"""``mlcore.lookup``: the catalogue folder's vectors, their cache, and the ranking of one photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlcore.dataset import CatalogueRecord
from mlcore.lookup import build_catalogue, identify
from mlcore.metadata import vote
from mlcore.pipeline import NoObjectFound


class StubPipeline:
    """Embeds a photo as its mean colour (three numbers); a black photo has no coin in it."""

    def __init__(self, version: str = "1") -> None:
        self.version = version
        self.calls = 0

    def model_versions(self) -> dict[str, str]:
        return {"embedding": self.version}

    def process(self, path, *, known_side=None, assume_upright=False):
        self.calls += 1
        colour = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32).mean(axis=(0, 1))
        if not colour.any():
            raise NoObjectFound()
        return Result(embedding=colour / np.linalg.norm(colour), side=known_side or "unknown", angle=0.0)

    def predict_metadata(self, neighbours):
        return vote(neighbours, fields=["material"])


class Result:
    def __init__(self, embedding, side, angle, turns=None) -> None:
        self.embedding, self.side, self.angle, self.turns = embedding, side, angle, turns


def record(tmp_path: Path, name: str, colour: tuple[int, int, int], type_id: str = "", material: str = "Silver"):
    images = {}
    for side, shade in (("obverse", 1.0), ("reverse", 0.9)):
        path = tmp_path / f"{name}.{side}.png"
        Image.new("RGB", (8, 8), tuple(int(c * shade) for c in colour)).save(path)
        images[side] = path
    return CatalogueRecord(name, type_id, images, {"material": material})


@pytest.fixture
def records(tmp_path):
    return [
        record(tmp_path, "red", (200, 30, 30), "type-red", "Bronze"),
        record(tmp_path, "green", (30, 200, 30), "type-green"),
        record(tmp_path, "blue", (30, 30, 200)),  # no type: the record is its own item
        record(tmp_path, "dark", (0, 0, 0), "type-dark"),  # no coin found: left out, as indexing does
    ]


def test_every_photo_with_a_coin_is_indexed_by_its_type(records):
    catalogue = build_catalogue(StubPipeline(), records)
    assert sorted(catalogue.index.image_ids) == sorted(
        f"{name}:{side}" for name in ("red", "green", "blue") for side in ("obverse", "reverse")
    )
    assert set(catalogue.index.item_ids) == {"type-red", "type-green", "record:blue"}


def test_the_cache_is_reused_only_while_models_and_catalogue_are_the_same(records, tmp_path):
    cache = tmp_path / "index.npz"
    first = StubPipeline()
    build_catalogue(first, records, cache=cache)
    assert first.calls == 8
    again = StubPipeline()
    cached = build_catalogue(again, records, cache=cache)
    assert again.calls == 0 and len(cached.index) == 6
    retrained = StubPipeline(version="2")
    build_catalogue(retrained, records, cache=cache)
    assert retrained.calls == 8
    fewer = StubPipeline(version="2")
    build_catalogue(fewer, records[:2], cache=cache)
    assert fewer.calls == 4


def test_a_photo_is_ranked_by_type_on_its_side_with_metadata(records):
    pipeline = StubPipeline()
    catalogue = build_catalogue(pipeline, records)
    reddish = np.array([190.0, 40.0, 35.0])
    found = identify(pipeline, Result(reddish / np.linalg.norm(reddish), "obverse", 0.0), catalogue)
    assert [c["type_id"] for c in found["candidates"]][0] == "type-red"
    assert all(c["image"].endswith(":obverse") for c in found["candidates"])
    assert len(found["candidates"]) == 3 and found["candidates"][0]["photo"].endswith("red.obverse.png")
    assert found["metadata"]["material"]["value"] == "Bronze"
    left_out = identify(pipeline, Result(reddish / np.linalg.norm(reddish), "unknown", 0.0), catalogue, exclude=["red"])
    assert "type-red" not in [c["type_id"] for c in left_out["candidates"]]
    assert {c["image"].split(":")[1] for c in left_out["candidates"]} <= {"obverse", "reverse"}
