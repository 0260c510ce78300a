"""Versioned trained artifacts (save, activate, roll back) and the training entry point."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mlcore import versions
from mlcore.setup_models import ModelFileError, read_manifest
from mlcore.train import catalogue_cutout, catalogue_mask, main, train_all

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
        mask = catalogue_mask(image)
        assert abs(int(mask.sum()) - int(np.pi * 80 * 80)) < 600
        cut = np.asarray(catalogue_cutout(image, size=200), dtype=np.int16)
        assert cut.shape == (200, 200, 3)
        assert tuple(cut[100, 100]) == (150, 110, 60)
        assert tuple(cut[2, 2]) == (128, 128, 128)  # corner: background, now neutral


def _models_dir(tmp_path: Path) -> Path:
    if not (REPO_MODELS / "manifest.json").exists():
        pytest.skip(f"pretrained models not prepared in {REPO_MODELS} (run make models)")
    target = tmp_path / "models"
    target.mkdir()
    for name in ("manifest.json", "mobilenetv2_features.pt", "u2netp.onnx"):
        if (REPO_MODELS / name).exists():
            (target / name).symlink_to(REPO_MODELS / name) if name != "manifest.json" else shutil.copy(
                REPO_MODELS / name, target / name
            )
    return target


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
        assert metrics["side"]["samples"] == 3 * 14  # clean, query-like upright, query-like turned
        assert 0.0 <= metrics["side"]["oof_accuracy"] <= 1.0
        assert metrics["side"]["samples_phone_turned"] == 4
        assert {"side-classifier", "orientation", "metadata"} <= set(report.parts)
        assert set(metrics["metadata"]["fields"]) >= {"material"}
        assert messages and messages[-1].startswith("trained version")
        for part, filename in report.parts.items():
            assert (report.path / filename).is_file(), part

    def test_it_refuses_too_few_records(self, ans_dir, tmp_path):
        from mlcore.dataset import load_ans_layout

        with pytest.raises(ValueError):
            train_all(load_ans_layout(ans_dir, limit=1), models_dir=tmp_path)
