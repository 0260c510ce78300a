"""`manage.py train_models --background-if-untrained` (what `make run` calls): train only when needed."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from identification import jobs
from mlcore import versions
from mlcore.train import current_recipes


def _commit(models_dir, recipes: dict[str, str | None]) -> str:
    version, staging = versions.version_start(models_dir, fingerprint=str(recipes))
    (staging / "side.npz").write_text("weights")
    info = {f"{kind}_recipe": recipe for kind, recipe in recipes.items() if recipe}
    versions.version_commit(models_dir, version, parts={"side-classifier": "side.npz"}, metrics={}, info=info)
    return version


@pytest.fixture
def queued(monkeypatch):
    calls = []
    monkeypatch.setattr(jobs, "training_request", lambda: calls.append("train"))
    return calls


@pytest.fixture
def models_dir(settings, tmp_path):
    settings.OBVERSE_MODELS_DIR = tmp_path
    return tmp_path


def _run() -> str:
    out = io.StringIO()
    call_command("train_models", "--background-if-untrained", stdout=out)
    return out.getvalue()


def test_it_queues_a_training_when_nothing_is_trained(models_dir, queued):
    assert "No trained models yet" in _run()
    assert queued == ["train"]


def test_it_does_nothing_when_the_active_version_fits_the_current_recipe(models_dir, queued):
    _commit(models_dir, current_recipes(models_dir))
    assert "nothing to do" in _run()
    assert queued == []


@pytest.mark.parametrize(
    ("kind", "recipe"),
    [("embedding", "gem-0-an-older-recipe"), ("embedding", None), ("orientation", "rotbins-1:an-older-recipe")],
)
def test_it_retrains_when_the_active_version_was_made_for_another_recipe(models_dir, queued, kind, recipe):
    _commit(models_dir, {**current_recipes(models_dir), kind: recipe})  # e.g. trained before an upgrade
    output = _run()
    assert f"The active version was trained for another {kind} recipe" in output
    assert queued == ["train"]
