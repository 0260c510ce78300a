"""Indexing the catalogue for search: each catalogue image's cut-out and embedding, per model version.

Every embedding row names the model version that made it, so a re-index for a new version runs
while searches keep using the previous one (``catalogue_pending_images``), and the previous
version's rows are pruned only once the new one covers the catalogue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from django.core.files.base import ContentFile
from django.db import transaction

from collection.models import ImageEmbedding, SpecimenImage
from identification import pipeline_cache
from identification.pipeline_cache import embedding_version
from mlcore.imageio import encode_png

logger = logging.getLogger(__name__)


def catalogue_image_index(*, image_id: int, pipeline=None, recut: bool = False) -> bool:
    """Cut out and embed one catalogue image with the active embedding model (idempotent).

    Catalogue photos are upright and their side is known, so the pipeline skips those steps. The
    cut-out is stored with the image, and a later index for another embedding version (a training,
    ``manage.py reindex``) embeds that stored cut-out instead of finding the object again: the
    same vector, in a fraction of the time (docs/scaling.md). ``recut=True`` finds the object again
    (after a segmenter change); new pixels clear the stored cut-out anyway (``collection.services``).
    Returns False when the image has no file or cannot be processed (logged, not raised).
    """
    from mlcore.imageio import ImageDecodeError
    from mlcore.pipeline import NoObjectFound

    pipeline = pipeline or pipeline_cache.get_pipeline()
    model = embedding_version(pipeline)
    image = SpecimenImage.objects.select_related("specimen").filter(pk=image_id).first()
    if image is None or not image.image:
        return False
    started = time.monotonic()
    vector = None if recut else _stored_cutout_vector(pipeline, image)
    cutout = None
    if vector is None:
        try:
            with image.image.open("rb") as fh:
                result = pipeline.process(fh.read(), known_side=image.side, assume_upright=True)
        except (ImageDecodeError, NoObjectFound) as exc:
            logger.warning("catalogue image %s not indexed: %s", image_id, exc)
            return False
        vector, cutout = result.embedding, result.cutout
    with transaction.atomic():
        if cutout is not None:
            name = f"cutouts/{image.pk}.png"
            image.cutout.storage.delete(name)
            image.cutout.save(f"{image.pk}.png", ContentFile(encode_png(cutout)), save=False)
            image.save(update_fields=["cutout"])
        ImageEmbedding.objects.update_or_create(
            image=image,
            model_name=model[0],
            model_version=model[1],
            defaults={"vector": vector, "side": image.side, "item_id": image.specimen.item_id},
        )
    logger.debug("indexed catalogue image %s in %.0f ms", image_id, (time.monotonic() - started) * 1000)
    return True


def _stored_cutout_vector(pipeline, image: SpecimenImage):
    """The embedding of the image's stored cut-out, or None when it has none or it cannot be read."""
    from PIL import Image

    if not image.cutout:
        return None
    try:
        with image.cutout.open("rb") as fh, Image.open(fh) as cutout:
            cutout.load()
            return pipeline.embed_cutout(cutout)
    except (OSError, ValueError) as exc:  # missing or damaged file: cut the photo out again
        logger.warning("catalogue image %s: stored cut-out unusable (%s); cutting it out again", image.pk, exc)
        return None


def catalogue_index_enqueue(*, image_ids: Sequence[int]) -> None:
    """Queue indexing of catalogue images after the current transaction commits (in batches)."""
    from django_q.tasks import async_task

    ids = list(image_ids)

    def enqueue():
        for start in range(0, len(ids), 50):
            async_task("identification.tasks.index_catalogue_images", ids[start : start + 50])

    transaction.on_commit(enqueue)


def catalogue_pending_images(*, model: tuple[str, str]):
    """Catalogue images without an embedding for this model version (what a re-index still has to do)."""
    done = ImageEmbedding.objects.filter(model_name=model[0], model_version=model[1]).values("image_id")
    return SpecimenImage.objects.exclude(image="").exclude(pk__in=done).order_by("pk")


def catalogue_prune_embeddings(*, keep: tuple[str, str]) -> int:
    """Delete embeddings of other model versions once the new version covers the catalogue."""
    deleted, _ = ImageEmbedding.objects.exclude(model_name=keep[0], model_version=keep[1]).delete()
    return deleted


def catalogue_index_pending(pipeline, *, progress=None) -> None:
    """Embed every catalogue image that has no embedding for ``pipeline``'s embedding version."""
    model = embedding_version(pipeline)
    pending = list(catalogue_pending_images(model=model).values_list("pk", flat=True))
    for done, image_id in enumerate(pending, start=1):
        catalogue_image_index(image_id=image_id, pipeline=pipeline)
        if progress and (done % 100 == 0 or done == len(pending)):
            progress(f"indexed {done}/{len(pending)} catalogue images for {model[1]}")
