"""`manage.py reindex`: embeds what the active version lacks, from the stored cut-outs, resumably."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from collection.models import ImageEmbedding
from identification import indexing
from tests.factories import catalogue_image, make_item

pytestmark = pytest.mark.django_db


def _reindex(*args: str) -> str:
    out = io.StringIO()
    call_command("reindex", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_a_new_version_is_embedded_from_the_stored_cutouts_and_the_old_one_pruned(fake_pipeline):
    images = [catalogue_image(make_item(), seed=900 + i, pipeline=fake_pipeline) for i in range(3)]
    calls = fake_pipeline.calls
    fake_pipeline.embedder.version = "2"
    assert indexing.catalogue_pending_images(model=("fake-pixels", "2")).count() == 3
    out = _reindex("--prune")
    assert "3 catalogue images to embed" in out and "embedded 3, failed 0" in out
    assert (fake_pipeline.calls, fake_pipeline.cutouts_embedded) == (calls, 3)  # no object found again
    assert set(ImageEmbedding.objects.values_list("model_version", flat=True)) == {"2"}
    assert ImageEmbedding.objects.filter(image__in=images).count() == 3
    assert "0 catalogue images to embed" in _reindex()  # nothing left: a rerun does nothing


def test_limit_stops_early_and_recut_cuts_the_objects_out_again(fake_pipeline):
    for i in range(3):
        catalogue_image(make_item(), seed=910 + i, pipeline=fake_pipeline)
    calls = fake_pipeline.calls
    fake_pipeline.embedder.version = "2"
    assert "embedded 2, failed 0" in _reindex("--limit", "2", "--recut")
    assert (fake_pipeline.calls, fake_pipeline.cutouts_embedded) == (calls + 2, 0)
    assert "1 catalogue images to embed" in _reindex()  # resumes with what is left
    assert indexing.catalogue_pending_images(model=("fake-pixels", "2")).count() == 0


class TestModelVersion:
    """--model VERSION embeds for a trained version before it is activated."""

    @pytest.fixture
    def versions(self, monkeypatch, tmp_path):
        from mlcore.versions import VersionInfo

        listed = [VersionInfo("20261201T000000Z-aaaa", tmp_path, "", active=True)]
        listed.append(VersionInfo("20261202T000000Z-bbbb", tmp_path, "", active=False))
        monkeypatch.setattr("identification.management.commands.reindex.list_versions", lambda models_dir: listed)

    def test_it_embeds_with_the_named_version(self, fake_pipeline, versions):
        catalogue_image(make_item(), seed=920, pipeline=fake_pipeline)
        fake_pipeline.embedder.version = "2"
        assert "embedded 1, failed 0" in _reindex("--model", "20261202T000000Z-bbbb")
        assert fake_pipeline.versions_asked == ["20261202T000000Z-bbbb"]

    def test_an_unknown_version_is_an_error_naming_the_list_command(self, fake_pipeline, versions):
        from django.core.management import CommandError

        with pytest.raises(CommandError, match="mlcore.train --list"):
            _reindex("--model", "nope")
        assert fake_pipeline.versions_asked == []

    def test_pruning_for_a_version_that_is_not_active_is_refused(self, fake_pipeline, versions):
        from django.core.management import CommandError

        catalogue_image(make_item(), seed=921, pipeline=fake_pipeline)
        with pytest.raises(CommandError, match="--prune"):
            _reindex("--model", "20261202T000000Z-bbbb", "--prune")
        assert ImageEmbedding.objects.count() == 1  # what search uses now is untouched
