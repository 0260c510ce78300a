"""identification.training: a new version is trained, indexed, then activated; queued for the worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from collection.models import Side
from identification import indexing, pipeline_cache, training
from tests.factories import make_image, make_item, make_specimen

pytestmark = pytest.mark.django_db


class TestModelsTrain:
    def test_it_refuses_a_catalogue_too_small_to_learn_from(self):
        with pytest.raises(ValidationError):
            training.models_train()

    def test_a_new_version_is_indexed_before_it_is_activated(self, monkeypatch, fake_pipeline):
        """Search keeps the previous version's complete index while the new one is embedded."""
        from types import SimpleNamespace

        from mlcore.train import TrainingReport

        for _ in range(4):
            specimen = make_specimen(make_item())
            make_image(specimen, Side.OBVERSE)
            make_image(specimen, Side.REVERSE)
        events = []

        def fake_train_all(records, **kwargs):
            events.append(("train", kwargs["activate"]))
            return TrainingReport(
                version="v2", path=Path("."), records=len(records), images=8, seconds=0.0, activated=False
            )

        class StagedPipeline:
            def __init__(self, pinned_version):
                self.pinned_version = pinned_version
                self.embedder = SimpleNamespace(name="fake-pixels", version=f"2@{pinned_version}")

        def fake_index(*, image_id, pipeline):
            events.append(("index", getattr(pipeline, "pinned_version", "active")))
            return True

        monkeypatch.setattr("mlcore.train.train_all", fake_train_all)
        # The new version's pipeline (pinned), and after the switch the active one.
        monkeypatch.setattr(
            pipeline_cache, "get_pipeline", lambda version=None: StagedPipeline(version) if version else fake_pipeline
        )
        monkeypatch.setattr(
            "mlcore.versions.version_activate", lambda models_dir, version: events.append(("activate", version))
        )
        monkeypatch.setattr(indexing, "catalogue_image_index", fake_index)
        report = training.models_train(use_reviews=False)
        assert events[0] == ("train", False)  # trained, not yet active
        activated = events.index(("activate", "v2"))
        assert events[1:activated] == [("index", "v2")] * 8  # every catalogue image, for the new version
        # After the switch, images still lacking an embedding of the active version are caught up.
        assert set(events[activated + 1 :]) <= {("index", "active")}
        assert report.activated

    def test_without_reindex_the_new_version_is_activated_at_once(self, monkeypatch, fake_pipeline):
        from mlcore.train import TrainingReport

        for _ in range(4):
            make_image(make_specimen(make_item()), Side.OBVERSE)
        activated = []
        report = TrainingReport(version="v3", path=Path("."), records=4, images=4, seconds=0.0, activated=False)
        monkeypatch.setattr("mlcore.train.train_all", lambda records, **kwargs: report)
        monkeypatch.setattr("mlcore.versions.version_activate", lambda models_dir, version: activated.append(version))
        monkeypatch.setattr(indexing, "catalogue_image_index", lambda **kwargs: pytest.fail("nothing is indexed"))
        training.models_train(use_reviews=False, reindex=False)
        assert activated == ["v3"]

    def test_training_is_queued_for_the_bulk_cluster_after_commit(
        self, monkeypatch, django_capture_on_commit_callbacks
    ):
        from django_q import tasks as q_tasks

        from identification import jobs

        queued = []
        monkeypatch.setattr(
            q_tasks, "async_task", lambda name, *args, **kwargs: queued.append((name, kwargs["cluster"]))
        )
        with django_capture_on_commit_callbacks(execute=True):
            jobs.training_request()
        assert queued == [("identification.tasks.train_models", "bulk")]
