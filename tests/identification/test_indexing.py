"""identification.indexing: one embedding per catalogue image and model version, from the stored cut-out."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from collection.models import ImageEmbedding
from identification import indexing
from tests.factories import catalogue_image, make_item

pytestmark = pytest.mark.django_db


class TestCatalogueIndex:
    def test_it_writes_one_embedding_per_model_version_and_is_idempotent(self, fake_pipeline):
        image = catalogue_image(make_item(), seed=800, pipeline=fake_pipeline)
        assert indexing.catalogue_image_index(image_id=image.pk, pipeline=fake_pipeline)
        embedding = ImageEmbedding.objects.get(image=image)
        assert (embedding.model_name, embedding.model_version, embedding.side) == ("fake-pixels", "1", "obverse")
        assert embedding.item_id == image.specimen.item_id
        image.refresh_from_db()
        assert image.cutout

    def test_a_trained_embedders_long_version_fits(self, fake_pipeline):
        # A trained recipe's version names the recipe, the projection and the training stamp.
        fake_pipeline.embedder.version = "gem-1-s256-grey-disc-gem3-sqrt-low112b1.5+lw512@20261129T093412Z-4f2a9c1e"
        image = catalogue_image(make_item(), seed=802, pipeline=fake_pipeline)
        assert ImageEmbedding.objects.get(image=image).model_version == fake_pipeline.embedder.version

    def test_another_version_embeds_the_stored_cutout_without_finding_the_object_again(self, fake_pipeline):
        image = catalogue_image(make_item(), seed=803, pipeline=fake_pipeline)
        image.refresh_from_db()
        cutout_name, calls = image.cutout.name, fake_pipeline.calls
        fake_pipeline.embedder.version = "2"
        assert indexing.catalogue_image_index(image_id=image.pk, pipeline=fake_pipeline)
        assert (fake_pipeline.calls, fake_pipeline.cutouts_embedded) == (calls, 1)
        new = ImageEmbedding.objects.get(image=image, model_version="2")
        with image.cutout.open("rb") as fh, Image.open(fh) as cutout:
            assert np.allclose(np.asarray(new.vector, dtype=np.float32), fake_pipeline.embed_cutout(cutout), atol=1e-3)
        assert ImageEmbedding.objects.filter(image=image, model_version="1").exists()  # kept until pruned
        image.refresh_from_db()
        assert image.cutout.name == cutout_name

    def test_recut_or_an_unreadable_cutout_finds_the_object_again(self, fake_pipeline):
        image = catalogue_image(make_item(), seed=804, pipeline=fake_pipeline)
        calls = fake_pipeline.calls
        assert indexing.catalogue_image_index(image_id=image.pk, pipeline=fake_pipeline, recut=True)
        assert fake_pipeline.calls == calls + 1
        image.refresh_from_db()
        with image.cutout.open("wb") as fh:
            fh.write(b"not a png")
        assert indexing.catalogue_image_index(image_id=image.pk, pipeline=fake_pipeline)
        assert (fake_pipeline.calls, fake_pipeline.cutouts_embedded) == (calls + 2, 0)
        image.refresh_from_db()
        with image.cutout.open("rb") as fh, Image.open(fh) as cutout:
            assert cutout.size == (96, 96)  # stored again

    def test_pending_images_are_those_without_the_active_version(self, fake_pipeline):
        image = catalogue_image(make_item(), seed=801, pipeline=fake_pipeline)
        assert not indexing.catalogue_pending_images(model=("fake-pixels", "1")).filter(pk=image.pk).exists()
        assert indexing.catalogue_pending_images(model=("fake-pixels", "2")).filter(pk=image.pk).exists()
