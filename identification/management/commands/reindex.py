"""Embed every catalogue image with the active (or a given trained) model version (resumable; search stays up)."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from identification import indexing, pipeline_cache
from identification.pipeline_cache import embedding_version
from mlcore.versions import list_versions


class Command(BaseCommand):
    help = (
        "Embed catalogue images that have no embedding for the active model version (from their stored "
        "cut-out; images without one are cut out first). "
        "Resumable: rerun after an interruption and it continues where it stopped. Search keeps "
        "answering from the existing embeddings of that version meanwhile."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--model",
            metavar="VERSION",
            help="A trained version to embed for (default: the active one); embed a version trained with "
            "`python -m mlcore.train --no-activate` before activating it, so search never finds an empty index.",
        )
        parser.add_argument("--limit", type=int, help="Stop after this many images.")
        parser.add_argument(
            "--prune", action="store_true", help="Afterwards delete embeddings of other model versions."
        )
        parser.add_argument(
            "--recut",
            action="store_true",
            help="Find and cut out the object again instead of embedding the stored cut-out (after a "
            "segmenter change; about 20x slower).",
        )

    def handle(self, *args, model=None, limit=None, prune=False, recut=False, **options):
        if model:
            versions = {info.version: info for info in list_versions(settings.OBVERSE_MODELS_DIR)}
            if model not in versions:
                raise CommandError(f"No trained version {model!r}; `python -m mlcore.train --list` lists them.")
            if prune and not versions[model].active:
                raise CommandError("--prune with a version that is not active would delete what search uses now.")
        pipeline = pipeline_cache.get_pipeline(version=model)
        active = embedding_version(pipeline)
        pending = indexing.catalogue_pending_images(model=active)
        ids = list(pending.values_list("pk", flat=True)[:limit] if limit else pending.values_list("pk", flat=True))
        self.stdout.write(f"{len(ids)} catalogue images to embed with {active[0]}@{active[1]}")
        done = failed = 0
        for image_id in tqdm(ids, unit="image", disable=not ids):
            if indexing.catalogue_image_index(image_id=image_id, pipeline=pipeline, recut=recut):
                done += 1
            else:
                failed += 1
        self.stdout.write(f"embedded {done}, failed {failed}")
        if prune and not indexing.catalogue_pending_images(model=active).exists():
            self.stdout.write(f"pruned {indexing.catalogue_prune_embeddings(keep=active)} old embeddings")
