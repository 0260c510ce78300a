"""The synthetic demo collection: deterministic, big enough, types distinct, importable, with example photos."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from PIL import Image

from bench import demo
from collection.models import Item, Source, Specimen, SpecimenImage

SMALL_TYPES = 9  # three rulers, three types each: enough to compare types within and across rulers


@pytest.fixture(scope="module")
def small_collection(tmp_path_factory) -> demo.DemoCollection:
    return demo.demo_generate(tmp_path_factory.mktemp("demo"), n_types=SMALL_TYPES, seed=7)


def _rows(collection: demo.DemoCollection) -> list[dict]:
    with collection.csv_path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _features(path: Path) -> np.ndarray:
    """A crude appearance vector: the middle of the coin in grey, small, brightness and contrast removed."""
    with Image.open(path) as image:
        w, h = image.size
        middle = image.convert("L").crop((w * 0.15, h * 0.15, w * 0.85, h * 0.85))
        grey = np.asarray(middle.resize((24, 24), Image.Resampling.BILINEAR), dtype=np.float32)
    grey = grey - grey.mean()
    return grey.ravel() / (np.linalg.norm(grey) + 1e-6)


class TestDemoGenerate:
    def test_it_gives_the_same_bytes_for_the_same_seed(self, tmp_path):
        first = demo.demo_generate(tmp_path / "first", n_types=2, seed=7)
        again = demo.demo_generate(tmp_path / "again", n_types=2, seed=7)
        assert _digests(again.csv_path.parent) == _digests(first.csv_path.parent)

    def test_it_gives_other_coins_for_another_seed(self, small_collection, tmp_path):
        other = demo.demo_generate(tmp_path / "other", n_types=1, seed=8)
        first = small_collection.csv_path.parent / "images" / "DEMO.001.1.obv.jpg"
        assert (other.csv_path.parent / "images" / "DEMO.001.1.obv.jpg").read_bytes() != first.read_bytes()

    def test_fewer_types_are_a_prefix_of_more(self, small_collection, tmp_path):
        fewer = demo.demo_generate(tmp_path / "fewer", n_types=2, seed=7)
        full = _digests(small_collection.csv_path.parent)
        for name, digest in _digests(fewer.csv_path.parent).items():
            if name != demo.CSV_NAME:
                assert full[name] == digest, name

    @pytest.mark.slow
    def test_worker_processes_give_the_same_bytes(self, small_collection, tmp_path):
        parallel = demo.demo_generate(tmp_path / "parallel", n_types=2, seed=7, workers=2)
        full = _digests(small_collection.csv_path.parent)
        for name, digest in _digests(parallel.csv_path.parent).items():
            if name != demo.CSV_NAME:
                assert full[name] == digest, name

    def test_every_row_has_both_sides_on_disk(self, small_collection):
        rows = _rows(small_collection)
        assert len(rows) == len(small_collection.specimens)
        folder = small_collection.csv_path.parent
        for row in rows:
            for column in ("obverse_image", "reverse_image"):
                with Image.open(folder / row[column]) as image:
                    assert image.size == (demo.IMAGE_SIZE, demo.IMAGE_SIZE)
                    assert image.mode == "RGB"

    def test_it_writes_the_generic_csv_columns(self, small_collection):
        with small_collection.csv_path.open(newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle))
        assert header == demo.CSV_COLUMNS

    def test_catalogue_background_is_plain_and_light(self, small_collection):
        path = small_collection.csv_path.parent / "images" / "DEMO.001.1.rev.jpg"
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
        corners = np.concatenate([pixels[:8, :8], pixels[:8, -8:], pixels[-8:, :8], pixels[-8:, -8:]])
        assert corners.mean() > 220
        assert corners.std() < 6


class TestDemoContent:
    def test_default_collection_has_forty_types_with_three_specimens(self):
        types = demo.demo_types()
        specimens = demo.demo_specimens(types)
        assert len(types) >= 40
        per_type = {t.index: 0 for t in types}
        for specimen in specimens:
            per_type[specimen.coin_type.index] += 1
        assert min(per_type.values()) >= 3
        assert len({s.record_id for s in specimens}) == len(specimens)

    def test_default_collection_uses_every_reverse_motif(self):
        motifs = {t.reverse["motif"] for t in demo.demo_types()}
        assert motifs == {motif for motif, _, _ in demo.REVERSES}

    def test_a_rulers_types_have_different_reverses(self):
        types = demo.demo_types()
        by_ruler: dict[str, list[str]] = {}
        for t in types:
            by_ruler.setdefault(t.ruler, []).append(t.reverse_description)
        for ruler, descriptions in by_ruler.items():
            assert len(set(descriptions)) == len(descriptions), ruler

    def test_rulers_are_marked_fictional_and_have_no_real_uris(self, small_collection):
        for row in _rows(small_collection):
            assert row["authority"].endswith("(fictional)")
            assert "nomisma.org" not in "".join(row.values())
            assert row["item_uri"].startswith("https://example.org/")

    def test_measurements_follow_the_denomination(self):
        standards = {name: (weight, diameter) for name, _, weight, diameter in demo.DENOMINATIONS}
        for specimen in demo.demo_specimens(demo.demo_types()):
            weight, diameter = standards[specimen.coin_type.denomination]
            assert 0.75 * weight < specimen.weight_g < 1.15 * weight
            assert 0.88 * diameter < specimen.diameter_mm < 1.12 * diameter
            assert 1 <= specimen.axis <= 12

    def test_materials_match_denominations(self):
        materials = {name: material for name, material, _, _ in demo.DENOMINATIONS}
        for t in demo.demo_types():
            assert t.material == materials[t.denomination]
        assert {t.material for t in demo.demo_types()} == {"gold", "silver", "bronze"}

    def test_types_differ_more_than_specimens_of_a_type(self, small_collection):
        folder = small_collection.csv_path.parent
        rows = _rows(small_collection)
        features = np.stack(
            [
                np.concatenate([_features(folder / r["obverse_image"]), _features(folder / r["reverse_image"])])
                for r in rows
            ]
        )
        labels = np.array([r["item_uri"] for r in rows])
        distances = np.linalg.norm(features[:, None] - features[None], axis=-1)
        same = labels[:, None] == labels[None]
        off_diagonal = ~np.eye(len(rows), dtype=bool)
        within = distances[same & off_diagonal].mean()
        between = distances[~same].mean()
        assert within < 0.8 * between
        # Nearest neighbour (leaving each specimen out) is a specimen of its own type.
        nearest = np.where(off_diagonal, distances, np.inf).argmin(axis=1)
        assert (labels[nearest] == labels).mean() >= 0.85


class TestExamplePhotos:
    def test_it_writes_phone_like_photos_of_catalogue_specimens(self, small_collection, tmp_path):
        examples = demo.example_photos(tmp_path, n=3, seed=3, collection_seed=7, n_types=SMALL_TYPES)
        record_ids = {s.record_id for s in small_collection.specimens}
        assert len(examples) == 3
        for path, record_id, side in examples:
            assert record_id in record_ids
            assert side in ("obverse", "reverse")
            with Image.open(path) as photo:
                assert photo.format == "JPEG"
                assert max(photo.size) >= 600

    def test_a_photo_differs_from_the_catalogue_image(self, small_collection, tmp_path):
        [(path, record_id, side)] = demo.example_photos(tmp_path, n=1, seed=5, collection_seed=7, n_types=SMALL_TYPES)
        catalogue = small_collection.csv_path.parent / "images" / f"{record_id}.{side[:3]}.jpg"
        photo = np.asarray(Image.open(path).convert("RGB").resize((demo.IMAGE_SIZE,) * 2), dtype=np.float32)
        original = np.asarray(Image.open(catalogue).convert("RGB"), dtype=np.float32)
        assert np.abs(photo - original).mean() > 25
        # The background is not the catalogue's plain light grey.
        assert np.asarray(Image.open(path).convert("L"), dtype=np.float32)[:20, :20].mean() < 200

    def test_photos_are_deterministic_and_the_manifest_lists_them(self, tmp_path):
        first = demo.example_photos(tmp_path / "a", n=2, seed=4, n_types=3)
        second = demo.example_photos(tmp_path / "b", n=2, seed=4, n_types=3)
        assert [p.read_bytes() for p, _, _ in first] == [p.read_bytes() for p, _, _ in second]
        manifest = demo.write_examples_manifest(tmp_path / "a", first)
        listed = json.loads(manifest.read_text())
        assert [(e["file"], e["record_id"], e["side"]) for e in listed] == [(p.name, r, s) for p, r, s in first]

    def test_photos_are_saved_at_phone_quality(self, tmp_path):
        [(path, _, _)] = demo.example_photos(tmp_path, n=1, seed=2, n_types=2)
        with Image.open(path) as photo:
            luma_table = photo.quantization[0]
        # libjpeg's standard luminance table scaled for quality 70 starts at 10 (quality 90: 3).
        assert luma_table[0] == 10


@pytest.mark.django_db
class TestLoadDemoCommand:
    @pytest.fixture(autouse=True)
    def _no_indexing(self, settings):
        # Embedding the images is the indexer's business and tested there; here only the import counts.
        settings.OBVERSE_INDEX_ON_IMPORT = False

    def _load(self, out: Path, *extra: str) -> str:
        buffer = io.StringIO()
        call_command("load_demo", "--types", "1", "--examples", "2", "--out", str(out), *extra, stdout=buffer)
        return buffer.getvalue()

    def _counts(self) -> tuple[int, int, int]:
        return Item.objects.count(), Specimen.objects.count(), SpecimenImage.objects.count()

    def test_it_imports_the_demo_through_the_importer_with_example_photos(self, tmp_path):
        self._load(tmp_path)
        [coin_type] = demo.demo_types(n_types=1)
        specimens = demo.demo_specimens([coin_type])
        assert self._counts() == (1, len(specimens), 2 * len(specimens))
        source = Source.objects.get(name="Obverse synthetic demo collection")
        assert source.is_synthetic
        assert "not real" in source.credit
        assert set(Specimen.objects.values_list("source", flat=True)) == {source.pk}
        item = Item.objects.get(uri=coin_type.uri)
        assert item.obverse_legend == coin_type.obverse_legend
        assert item.reverse_legend == coin_type.reverse_legend
        listed = json.loads((tmp_path / "examples" / "examples.json").read_text())
        assert len(listed) == 2
        for entry in listed:
            assert (tmp_path / "examples" / entry["file"]).exists()
            assert Specimen.objects.filter(record_id=entry["record_id"]).exists()

    def test_it_does_nothing_the_second_time(self, tmp_path):
        self._load(tmp_path)
        counts = self._counts()
        output = self._load(tmp_path / "second")
        assert "already has" in output
        assert not (tmp_path / "second").exists()
        assert self._counts() == counts

    def test_force_loads_again_without_duplicates(self, tmp_path):
        self._load(tmp_path)
        counts = self._counts()
        self._load(tmp_path, "--force")
        assert self._counts() == counts
