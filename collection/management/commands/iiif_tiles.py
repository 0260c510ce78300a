"""``manage.py iiif_tiles``: cut the IIIF tiles of catalogue images stored before tiles existed."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from tqdm import tqdm

from collection import services
from collection.models import SpecimenImage


class Command(BaseCommand):
    help = (
        "Make the static IIIF level 0 tiles of every stored catalogue image that has none (images imported "
        "before tiles existed, or added by approving an identification). Resumable; images with tiles are skipped."
    )

    def add_arguments(self, parser):
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")

    def handle(self, *args, no_progress: bool, **options):
        ids = list(SpecimenImage.objects.exclude(image="").filter(tiles={}).order_by("pk").values_list("pk", flat=True))
        made = failed = 0
        for image_id in tqdm(ids, unit="image", disable=no_progress, dynamic_ncols=True):
            try:
                made += services.specimen_image_tiles_make(image_id=image_id)
            except (services.ImageFileError, OSError) as exc:
                failed += 1
                self.stderr.write(f"image {image_id}: {exc}")
        self.stdout.write(f"tiles made for {made} images; {failed} failed; {len(ids) - made - failed} already had them")
