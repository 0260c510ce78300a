"""`manage.py reindex`: embeds what the active version lacks, from the stored cut-outs, resumably."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from collection.models import ImageEmbedding
from identification import services
from tests.factories import make_item
from tests.identification.fakes import FakeEmbedder, FakePipeline
from tests.identification.test_services import catalogue_image

pytestmark = pytest.mark.django_db


@pytest.fixture
def pipeline(monkeypatch):
    pipeline = FakePipeline()
    pipeline.embedder = FakeEmbedder()  # its own: the tests change its version
    pipeline.versions_asked = []

    def get_pipeline(version=None):
        pipeline.versions_asked.append(version)
        return pipeline

    monkeypatch.setattr("identification.management.commands.reindex.get_pipeline", get_pipeline)
    return pipeline


def _reindex(*args: str) -> str:
    out = io.StringIO()
    call_command("reindex", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_a_new_version_is_embedded_from_the_stored_cutouts_and_the_old_one_pruned(pipeline):
    images = [catalogue_image(make_item(), seed=900 + i, pipeline=pipeline) for i in range(3)]
    calls = pipeline.calls
    pipeline.embedder.version = "2"
    assert services.catalogue_pending_images(model=("fake-pixels", "2")).count() == 3
    out = _reindex("--prune")
    assert "3 catalogue images to embed" in out and "embedded 3, failed 0" in out
    assert (pipeline.calls, pipeline.cutouts_embedded) == (calls, 3)  # no object found again
    assert set(ImageEmbedding.objects.values_list("model_version", flat=True)) == {"2"}
    assert ImageEmbedding.objects.filter(image__in=images).count() == 3
    assert "0 catalogue images to embed" in _reindex()  # nothing left: a rerun does nothing


def test_limit_stops_early_and_recut_cuts_the_objects_out_again(pipeline):
    for i in range(3):
        catalogue_image(make_item(), seed=910 + i, pipeline=pipeline)
    calls = pipeline.calls
    pipeline.embedder.version = "2"
    assert "embedded 2, failed 0" in _reindex("--limit", "2", "--recut")
    assert (pipeline.calls, pipeline.cutouts_embedded) == (calls + 2, 0)
    assert "1 catalogue images to embed" in _reindex()  # resumes with what is left
    assert services.catalogue_pending_images(model=("fake-pixels", "2")).count() == 0


class TestModelVersion:
    """--model VERSION embeds for a trained version before it is activated."""

    @pytest.fixture
    def versions(self, monkeypatch, tmp_path):
        from mlcore.versions import VersionInfo

        listed = [VersionInfo("20261201T000000Z-aaaa", tmp_path, "", active=True)]
        listed.append(VersionInfo("20261202T000000Z-bbbb", tmp_path, "", active=False))
        monkeypatch.setattr("identification.management.commands.reindex.list_versions", lambda models_dir: listed)

    def test_it_embeds_with_the_named_version(self, pipeline, versions):
        catalogue_image(make_item(), seed=920, pipeline=pipeline)
        pipeline.embedder.version = "2"
        assert "embedded 1, failed 0" in _reindex("--model", "20261202T000000Z-bbbb")
        assert pipeline.versions_asked == ["20261202T000000Z-bbbb"]

    def test_an_unknown_version_is_an_error_naming_the_list_command(self, pipeline, versions):
        from django.core.management import CommandError

        with pytest.raises(CommandError, match="mlcore.train --list"):
            _reindex("--model", "nope")
        assert pipeline.versions_asked == []

    def test_pruning_for_a_version_that_is_not_active_is_refused(self, pipeline, versions):
        from django.core.management import CommandError

        catalogue_image(make_item(), seed=921, pipeline=pipeline)
        with pytest.raises(CommandError, match="--prune"):
            _reindex("--model", "20261202T000000Z-bbbb", "--prune")
        assert ImageEmbedding.objects.count() == 1  # what search uses now is untouched
