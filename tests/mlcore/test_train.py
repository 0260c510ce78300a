"""Versioned trained artifacts (save, activate, roll back) and the training entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mlcore import versions
from mlcore.cutout import catalogue_cutout
from mlcore.modelfiles import ModelFileError, link_pretrained, read_manifest
from mlcore.segment import object_mask
from mlcore.train import current_recipes, main, train_all

REPO_MODELS = Path(__file__).resolve().parents[2] / "var" / "models"


def _commit(models_dir: Path, payload: str, **kwargs) -> str:
    version, staging = versions.version_start(models_dir, fingerprint=payload)
    (staging / "side.npz").write_text(payload)
    versions.version_commit(
        models_dir, version, parts={"side-classifier": "side.npz"}, metrics={"p": payload}, **kwargs
    )
    return version


class TestVersions:
    def test_a_committed_version_is_active_with_metrics_and_manifest_entry(self, tmp_path):
        version = _commit(tmp_path, "one")
        path, active = versions.resolve(tmp_path, "side.npz")
        assert active == version
        assert path.read_text() == "one"
        assert json.loads((path.parent / "metrics.json").read_text()) == {"p": "one"}
        entry = read_manifest(tmp_path)["trained:side-classifier"]
        assert entry["filename"] == f"trained/{version}/side.npz"
        assert "package" not in entry  # not a pretrained download

    def test_version_names_sort_by_time_and_differ(self, tmp_path):
        first = _commit(tmp_path, "one")
        second = _commit(tmp_path, "one")
        assert first != second
        assert [v.version for v in versions.list_versions(tmp_path)] == sorted([first, second])

    def test_it_rolls_back_to_the_previous_version(self, tmp_path):
        first = _commit(tmp_path, "one")
        second = _commit(tmp_path, "two")
        assert versions.active_version(tmp_path) == second
        versions.version_rollback(tmp_path)
        path, active = versions.resolve(tmp_path, "side.npz")
        assert (active, path.read_text()) == (first, "one")
        assert read_manifest(tmp_path)["trained:side-classifier"]["version"] == first
        versions.version_activate(tmp_path, second)
        assert versions.previous_version(tmp_path) == first

    def test_an_unactivated_version_leaves_the_active_one(self, tmp_path):
        first = _commit(tmp_path, "one")
        _commit(tmp_path, "two", activate=False)
        assert versions.active_version(tmp_path) == first

    def test_resolve_reads_a_named_version_instead_of_the_active_one(self, tmp_path):
        _commit(tmp_path, "one")
        staged = _commit(tmp_path, "two", activate=False)
        path, version = versions.resolve(tmp_path, "side.npz", version=staged)
        assert (version, path.read_text()) == (staged, "two")
        with pytest.raises(ModelFileError, match="nope"):
            versions.resolve(tmp_path, "side.npz", version="nope")

    def test_it_refuses_unknown_and_unfinished_versions(self, tmp_path):
        version, _ = versions.version_start(tmp_path, fingerprint="x")
        with pytest.raises(ModelFileError):
            versions.version_activate(tmp_path, version)
        with pytest.raises(ModelFileError):
            versions.version_activate(tmp_path, "nope")
        assert versions.list_versions(tmp_path) == []

    def test_it_refuses_a_corrupt_part(self, tmp_path):
        version = _commit(tmp_path, "one", activate=False)
        (tmp_path / "trained" / version / "side.npz").write_text("truncated!!")
        with pytest.raises(ModelFileError, match="corrupt"):
            versions.version_activate(tmp_path, version)

    def test_parts_trained_for_another_embedding_recipe_are_refused(self, tmp_path):
        version = _commit(tmp_path, "one", info={"embedding_recipe": "gem-1-old"})
        assert versions.trained_recipe(tmp_path, version) == "gem-1-old"
        path, _ = versions.resolve(tmp_path, "side.npz", recipe="gem-1-old")
        assert path.read_text() == "one"
        with pytest.raises(ModelFileError, match="gem-1-old.*gem-1-new.*mlcore.train"):
            versions.resolve(tmp_path, "side.npz", recipe="gem-1-new")
        unrecorded = _commit(tmp_path, "two")  # made before recipes were recorded
        assert versions.trained_recipe(tmp_path, unrecorded) is None
        with pytest.raises(ModelFileError, match="unrecorded"):
            versions.resolve(tmp_path, "side.npz", recipe="gem-1-new")

    def test_without_training_resolve_names_the_command(self, tmp_path):
        with pytest.raises(ModelFileError, match="mlcore.train"):
            versions.resolve(tmp_path, "side.npz")
        with pytest.raises(ModelFileError):
            versions.version_rollback(tmp_path)

    def test_it_prunes_old_versions_but_keeps_active_and_previous(self, tmp_path):
        made = [_commit(tmp_path, str(i), keep=1) for i in range(4)]
        left = [v.version for v in versions.list_versions(tmp_path)]
        assert made[-1] in left and made[-2] in left
        assert made[0] not in left
        assert len(left) == 3

    def test_the_command_line_lists_and_activates(self, tmp_path, capsys):
        first = _commit(tmp_path, "one")
        _commit(tmp_path, "two")
        assert main(["--models-dir", str(tmp_path), "--activate", first]) == 0
        assert versions.active_version(tmp_path) == first
        main(["--models-dir", str(tmp_path), "--list"])
        lines = capsys.readouterr().out.splitlines()
        assert any(line.startswith("*") and first in line for line in lines)


class TestCatalogueCutout:
    def test_it_centres_the_object_on_neutral(self):
        image = Image.new("RGB", (300, 300), (255, 255, 255))
        ImageDraw.Draw(image).ellipse((20, 60, 180, 220), fill=(150, 110, 60))
        mask = object_mask(image)
        assert abs(int(mask.sum()) - int(np.pi * 80 * 80)) < 600
        cut = np.asarray(catalogue_cutout(image, size=200), dtype=np.int16)
        assert cut.shape == (200, 200, 3)
        assert tuple(cut[100, 100]) == (150, 110, 60)
        assert tuple(cut[2, 2]) == (128, 128, 128)  # corner: background, now neutral


def _models_dir(tmp_path: Path) -> Path:
    if not (REPO_MODELS / "manifest.json").exists():
        pytest.skip(f"pretrained models not prepared in {REPO_MODELS} (run make models)")
    return link_pretrained(REPO_MODELS, tmp_path / "models")


@pytest.mark.data
@pytest.mark.slow
class TestTrainAll:
    def test_it_trains_a_tiny_subset_into_an_active_version(self, ans_dir, tmp_path):
        from mlcore.dataset import load_ans_layout

        models_dir = _models_dir(tmp_path)
        records = load_ans_layout(ans_dir, limit=8)
        messages = []
        report = train_all(
            records,
            models_dir=models_dir,
            seed=0,
            exclude={records[0].record_id},
            progress=messages.append,
            phone_samples=4,
            orientation_images=8,
        )
        assert report.records == 7
        assert report.images == 14
        assert versions.active_version(models_dir) == report.version
        metrics = json.loads((report.path / "metrics.json").read_text())
        side = metrics["side"]
        # clean, query-like upright, query-like turned; a share of the specimens held out to calibrate
        assert side["samples"] + side["held_out_samples"] == 3 * 14
        assert 0.0 <= side["held_out_accuracy"] <= 1.0
        assert {"held_out_accuracy_clean", "held_out_accuracy_query_upright", "held_out_accuracy_query_turned"} <= set(
            side
        )
        assert 0 <= side.get("held_out_samples_phone_turned", 0) <= 4
        assert {"side-classifier", "orientation", "metadata"} <= set(report.parts)
        assert set(metrics["metadata"]["fields"]) >= {"material"}
        assert messages and messages[-1].startswith("trained version")
        from mlcore.embed import Embedder

        assert versions.trained_recipe(models_dir, report.version) == Embedder(models_dir).base_version
        assert versions.trained_recipe(models_dir, report.version, "side") == current_recipes(models_dir)["side"]
        for part, filename in report.parts.items():
            assert (report.path / filename).is_file(), part

    def test_it_refuses_too_few_records(self, ans_dir, tmp_path):
        from mlcore.dataset import load_ans_layout

        with pytest.raises(ValueError):
            train_all(load_ans_layout(ans_dir, limit=1), models_dir=tmp_path)


# --- Learning from reviews (feedback) ------------------------------------------------------------


def _pixels(images) -> np.ndarray:
    """A fast stand-in for the backbone: a 192-d vector of grey pixels (16×12), L2-normalised.

    (Embeddings are zero-padded to the index width, so a short descriptor works all the way through.)
    """
    rows = [np.asarray(image.convert("L").resize((16, 12)), dtype=np.float32).ravel() for image in images]
    vectors = np.asarray(rows, dtype=np.float32).reshape(len(rows), 192)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-6)


def _coin_photo(path: Path, type_index: int, specimen: int, side: str) -> Path:
    """A studio-like photo: a disc on white whose pattern depends on type and side, plus specimen noise."""
    rng = np.random.default_rng([type_index, specimen, side == "obverse"])
    pattern = np.random.default_rng([type_index, side == "obverse"])
    image = Image.new("RGB", (96, 96), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.ellipse([8, 8, 88, 88], fill=(150, 120, 70) if side == "obverse" else (110, 110, 120))
    for _ in range(5):
        x, y = (int(v) for v in pattern.integers(20, 64, 2))
        shade = int(pattern.integers(0, 90))
        draw.rectangle([x, y, x + 10, y + 6], fill=(shade, shade, shade))
    x, y = (int(v) for v in rng.integers(25, 60, 2))
    draw.ellipse([x, y, x + 5, y + 5], fill=(200, 200, 200))  # wear: one specimen's own mark
    image.save(path)
    return path


@pytest.fixture
def fast_training(monkeypatch, tmp_path):
    """train_all with the pixel stand-in for the backbone, no orientation part, small projections."""
    import torch
    import torchvision

    from mlcore import backbone, embed
    from mlcore import train as train_module
    from mlcore.backbone import fold_batch_norms

    def read(self, images, *, layout=False, stems=False):
        vectors = _pixels(list(images))
        return embed.Reading(
            vectors,
            np.zeros((len(vectors), 8), np.float32) if layout else None,
            # The side network's input: 96 of the pixels as 4×4 maps (the real ones are block 13's, 16×16).
            torch.from_numpy(np.repeat(vectors[:, :96, None, None], 4, axis=2).repeat(4, axis=3)).half()
            if stems
            else None,
        )

    untrained = fold_batch_norms(torchvision.models.mobilenet_v2(weights=None).features.eval())
    monkeypatch.setattr(backbone.Backbone, "_load", lambda self: object())
    monkeypatch.setattr(backbone.Backbone, "module", property(lambda self: untrained))
    monkeypatch.setattr(embed.Embedder, "read", read)
    monkeypatch.setattr(train_module, "PROJECTION_DIM", 16)
    monkeypatch.setattr(train_module, "MIN_PROJECTION_DIM", 4)
    from mlcore.dataset import CatalogueRecord

    folder = tmp_path / "images"
    folder.mkdir()
    records = []
    for type_index in range(10):
        for specimen in range(2):
            images = {
                side: _coin_photo(folder / f"t{type_index}s{specimen}.{side}.png", type_index, specimen, side)
                for side in ("obverse", "reverse")
            }
            records.append(
                CatalogueRecord(
                    f"r{type_index}-{specimen}", f"type{type_index}", images, {"material": f"m{type_index % 3}"}
                )
            )
    return records


def _train(records, tmp_path, name, **kwargs):
    models_dir = tmp_path / name
    models_dir.mkdir()
    kwargs.setdefault("projection", "always")
    kwargs.setdefault("orientation_images", 0)  # no orientation part: the stand-in has no layout
    return train_all(records, models_dir=models_dir, seed=3, phone_samples=0, **kwargs)


def _reviews(records, folder: Path, count: int = 6):
    """Reviewed phone photos: a darker, blurred, turned copy of a specimen, accepted as its type."""
    from PIL import ImageFilter

    from mlcore.train import FeedbackExample

    by_type = {}
    for record in records:
        by_type.setdefault(record.type_id, []).append(record)
    examples = []
    for i in range(count):
        type_id = f"type{i % 10}"
        photo = Image.open(by_type[type_id][0].images["obverse"]).convert("RGB")
        photo = photo.rotate(25, fillcolor=(128, 128, 128)).filter(ImageFilter.GaussianBlur(2))
        path = folder / f"review{i}.png"
        photo.point(lambda v: int(v * 0.7)).save(path)
        wrong = by_type[f"type{(i + 1) % 10}"]
        examples.append(FeedbackExample(query=path, side="obverse", positives=by_type[type_id], negatives=wrong))
    return examples


def _files(report) -> dict[str, bytes]:
    return {name: (report.path / filename).read_bytes() for name, filename in sorted(report.parts.items())}


class TestFeedbackPairs:
    def test_each_review_pairs_with_its_items_specimens_and_hard_negatives(self, fast_training, tmp_path):
        from mlcore.train import FeedbackExample, feedback_pairs

        records = fast_training
        examples = _reviews(records, tmp_path, count=3)
        examples.append(FeedbackExample(query=tmp_path / "missing.png", side="obverse", positives=records[:2]))
        examples.append(FeedbackExample(query=examples[0].query, side="obverse", positives=[]))

        def descriptor(record, side):
            return _pixels([Image.open(record.images[side])])[0] if side in record.images else None

        pairs = feedback_pairs(examples, describe=_pixels, catalogue_descriptor=descriptor, weight=2.0)
        assert pairs.summary() == {
            "examples": 5,
            "used": 3,
            "skipped": 2,  # an unreadable photo, an item without catalogue images
            "positive_pairs": 6,
            "hard_negative_pairs": 6,
        }
        assert pairs.types == ["type0", "type1", "type2"]
        # The pairs of one photo share its weight, whatever the number of specimens.
        assert np.allclose(np.bincount(pairs.example, weights=pairs.weight), 2.0)
        assert np.allclose(pairs.positive[0], descriptor(records[0], "obverse"))

    def test_the_record_made_from_the_photo_is_not_its_own_positive(self, fast_training, tmp_path):
        from mlcore.train import FeedbackExample, feedback_pairs

        records = fast_training
        photo = Image.open(records[0].images["obverse"])
        example = FeedbackExample(
            query=photo, side="obverse", positives=records[:2], own_record_id=records[0].record_id
        )

        def descriptor(record, side):
            return _pixels([Image.open(record.images[side])])[0]

        pairs = feedback_pairs([example], describe=_pixels, catalogue_descriptor=descriptor)
        assert len(pairs.positive) == 1
        assert np.allclose(pairs.positive[0], descriptor(records[1], "obverse"))
        assert pairs.own == [records[0].record_id]

    def test_an_unknown_side_takes_the_closer_side_of_the_accepted_item(self, fast_training, tmp_path):
        from mlcore.train import FeedbackExample, feedback_pairs

        records = fast_training
        reverse_photo = Image.open(records[4].images["reverse"])
        example = FeedbackExample(query=reverse_photo, side="other", positives=records[4:6])

        def descriptor(record, side):
            return _pixels([Image.open(record.images[side])])[0]

        pairs = feedback_pairs([example], describe=_pixels, catalogue_descriptor=descriptor)
        assert pairs.sides == ["reverse"]


@pytest.mark.slow
class TestTrainAllWithFeedback:
    """train_all with a pixel stand-in for the backbone (about 10–30 s a training on this machine)."""

    def test_reviews_reach_the_projection_are_counted_and_none_changes_nothing(self, fast_training, tmp_path):
        records = fast_training
        examples = _reviews(records, tmp_path)
        plain = _train(records, tmp_path, "plain")
        empty = _train(records, tmp_path, "empty", feedback=[])
        learned = _train(records, tmp_path, "learned", feedback=examples)
        again = _train(records, tmp_path, "again", feedback=examples)
        # No review signal: the same weights as a training that never heard of reviews.
        assert "embedding-projection" in plain.parts
        assert _files(plain) == _files(empty)
        assert empty.feedback_pairs == 0 and "feedback" not in empty.metrics
        # The signal is used and counted.
        assert learned.feedback_pairs == 12  # 6 photos × the 2 specimens of their type
        assert learned.metrics["feedback"]["hard_negative_pairs"] == 12
        assert learned.metrics["feedback"]["used"] == 6
        metrics = json.loads((learned.path / "metrics.json").read_text())
        assert metrics["feedback"]["positive_pairs"] == 12
        plain_projection = np.load(plain.path / "embed.npz")["matrix"]
        learned_projection = np.load(learned.path / "embed.npz")["matrix"]
        assert plain_projection.shape == learned_projection.shape
        assert not np.allclose(plain_projection, learned_projection)
        assert _files(learned) == _files(again)  # seeded: the same signal trains the same weights

    def test_reviewed_photos_join_the_metadata_calibration(self, fast_training, tmp_path):
        records = fast_training
        plain = _train(records, tmp_path, "plain", projection="off")
        learned = _train(records, tmp_path, "learned", projection="off", feedback=_reviews(records, tmp_path))
        assert "embedding-projection" not in learned.parts
        assert learned.feedback_pairs == 12
        assert _files(plain)["side-classifier"] == _files(learned)["side-classifier"]
        assert _files(plain)["metadata"] != _files(learned)["metadata"]

    def test_it_refuses_an_unknown_projection_mode(self, fast_training, tmp_path):
        with pytest.raises(ValueError, match="projection"):
            _train(fast_training, tmp_path, "bad", projection="sometimes")
