"""`manage.py train_models --background-if-untrained` (what `make run` calls): train only when needed."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from identification import services
from mlcore import versions
from mlcore.embed import Embedder


def _commit(models_dir, recipe: str | None) -> str:
    version, staging = versions.version_start(models_dir, fingerprint=str(recipe))
    (staging / "side.npz").write_text("weights")
    info = {"embedding_recipe": recipe} if recipe else {}
    versions.version_commit(models_dir, version, parts={"side-classifier": "side.npz"}, metrics={}, info=info)
    return version


@pytest.fixture
def queued(monkeypatch):
    calls = []
    monkeypatch.setattr(services, "models_train_enqueue", lambda: calls.append("train"))
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
    _commit(models_dir, Embedder(models_dir).base_version)
    assert "nothing to do" in _run()
    assert queued == []


@pytest.mark.parametrize("recipe", ["gem-0-an-older-recipe", None])
def test_it_retrains_when_the_active_version_was_made_for_another_recipe(models_dir, queued, recipe):
    _commit(models_dir, recipe)  # e.g. trained before an upgrade changed the embedding
    output = _run()
    assert "was not trained for " + Embedder(models_dir).base_version in output
    assert queued == ["train"]
