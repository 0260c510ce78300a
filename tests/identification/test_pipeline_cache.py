"""identification.pipeline_cache: one pipeline per process, replaced when another process activates a version."""

from __future__ import annotations

import pytest

from identification import pipeline_cache
from mlcore import versions


def _commit(models_dir, payload: str, *, activate: bool = True) -> str:
    version, staging = versions.version_start(models_dir, fingerprint=payload)
    (staging / "metadata.json").write_text(payload)
    versions.version_commit(models_dir, version, parts={"metadata": "metadata.json"}, metrics={}, activate=activate)
    return version


@pytest.fixture
def models_dir(tmp_path, settings):
    settings.OBVERSE_MODELS_DIR = tmp_path
    pipeline_cache.reset_pipeline()
    yield tmp_path
    pipeline_cache.reset_pipeline()


def test_one_pipeline_per_process_while_the_active_version_stays(models_dir):
    _commit(models_dir, "one")
    assert pipeline_cache.get_pipeline() is pipeline_cache.get_pipeline()


def test_a_version_activated_elsewhere_replaces_the_pipeline(models_dir):
    first = _commit(models_dir, "one")
    before = pipeline_cache.get_pipeline()
    staged = _commit(models_dir, "two", activate=False)
    assert pipeline_cache.get_pipeline() is before  # trained but not active yet: nothing changes
    versions.version_activate(models_dir, staged)  # what train_models does, in another process
    after = pipeline_cache.get_pipeline()
    assert after is not before
    versions.version_activate(models_dir, first)  # a rollback is picked up too
    assert pipeline_cache.get_pipeline() is not after
