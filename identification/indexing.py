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


BATCH = 16  # photos the backbone embeds at once while indexing (memory stays small, the batch pays)


def catalogue_image_index(*, image_id: int, pipeline=None, recut: bool = False) -> bool:
    """Cut out and embed one catalogue image with the active embedding model (idempotent); see below."""
    indexed, _ = catalogue_images_index(image_ids=[image_id], pipeline=pipeline, recut=recut, skip_done=False)
    return indexed == 1


def catalogue_images_index(
    *, image_ids: Sequence[int], pipeline=None, recut: bool = False, skip_done: bool = True
) -> tuple[int, int]:
    """Cut out and embed catalogue images for ``pipeline``'s embedding version; (indexed, failed).

    Catalogue photos are upright and their side is known, so the pipeline skips those steps, and a
    studio photo is cut out without the segmentation model; the backbone embeds ``BATCH`` photos at
    once (``Pipeline.process_catalogue``). The cut-out is stored with the image, and a later index
    for another embedding version (a training, ``manage.py reindex``) embeds that stored cut-out
    instead of finding the object again. ``recut=True`` finds the object again (after a segmenter
    change). ``skip_done``: an image already embedded for this version counts as indexed and is not
    embedded again, so a chunk that runs twice (its worker was killed) does nothing twice. Images
    without a file, or whose photo cannot be used, count as failed (logged, not raised).
    """
    pipeline = pipeline or pipeline_cache.get_pipeline()
    model = embedding_version(pipeline)
    images = list(SpecimenImage.objects.select_related("specimen").filter(pk__in=image_ids).order_by("pk"))
    if skip_done:
        embedded = set(
            ImageEmbedding.objects.filter(
                image_id__in=[image.pk for image in images], model_name=model[0], model_version=model[1]
            ).values_list("image_id", flat=True)
        )
        images = [image for image in images if image.pk not in embedded]
    else:
        embedded = set()
    failed = len(set(image_ids)) - len(images) - len(embedded)  # ids with no catalogue image any more
    indexed = len(embedded)
    for start in range(0, len(images), BATCH):
        ok, bad = _index_batch(images[start : start + BATCH], pipeline, model, recut=recut)
        indexed, failed = indexed + ok, failed + bad
    return indexed, failed


def _index_batch(images: list[SpecimenImage], pipeline, model: tuple[str, str], *, recut: bool) -> tuple[int, int]:
    started = time.monotonic()
    stored = {} if recut else _stored_cutouts(images)
    vectors = dict(zip(stored, pipeline.embed_many(list(stored.values())), strict=True)) if stored else {}
    to_cut = [image for image in images if image.pk not in vectors and image.image]
    sources = []
    for image in to_cut:
        with image.image.open("rb") as fh:
            sources.append(fh.read())
    cutouts = {}
    for image, cut in zip(to_cut, pipeline.process_catalogue(sources) if sources else [], strict=True):
        if cut.error:
            logger.warning("catalogue image %s not indexed: %s", image.pk, cut.error)
            continue
        vectors[image.pk], cutouts[image.pk] = cut.embedding, cut.cutout
    with transaction.atomic():
        for image in images:
            if image.pk not in vectors:
                continue
            if image.pk in cutouts:
                name = f"cutouts/{image.pk}.png"
                image.cutout.storage.delete(name)
                image.cutout.save(f"{image.pk}.png", ContentFile(encode_png(cutouts[image.pk])), save=False)
                image.save(update_fields=["cutout"])
            ImageEmbedding.objects.update_or_create(
                image=image,
                model_name=model[0],
                model_version=model[1],
                defaults={"vector": vectors[image.pk], "side": image.side, "item_id": image.specimen.item_id},
            )
    logger.debug("indexed %d catalogue images in %.0f ms", len(vectors), (time.monotonic() - started) * 1000)
    return len(vectors), len(images) - len(vectors)


def _stored_cutouts(images: list[SpecimenImage]) -> dict[int, object]:
    """{image id: its stored cut-out}, for the images that have a readable one."""
    from PIL import Image

    found = {}
    for image in images:
        if not image.cutout:
            continue
        try:
            with image.cutout.open("rb") as fh, Image.open(fh) as cutout:
                cutout.load()
                found[image.pk] = cutout.copy()
        except (OSError, ValueError) as exc:  # missing or damaged file: cut the photo out again
            logger.warning("catalogue image %s: stored cut-out unusable (%s); cutting it out again", image.pk, exc)
    return found


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
