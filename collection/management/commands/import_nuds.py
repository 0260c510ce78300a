"""``manage.py import_nuds PATH... [--images DIR]``: import NUDS XML records (files or folders)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from collection.importers.base import index_imported_images
from collection.importers.nuds import import_nuds_paths


class Command(BaseCommand):
    help = (
        "Import NUDS XML records (Numishare/ANS format). PATH may be files or folders of *.xml; images are "
        "found as <record_id>.obv.* / <record_id>.rev.* in --images (default: ../images beside the XML files)."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")
        parser.add_argument("--images", type=Path, default=None, metavar="DIR", help="Folder of the image files.")
        parser.add_argument("--limit", type=int, default=None, help="Import only the first N files.")
        parser.add_argument("--report", type=Path, default=None, metavar="FILE", help="Also write the result as JSON.")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")

    def handle(self, *args, paths: list[Path], images: Path | None, limit: int | None, report: Path | None, **options):
        missing = [str(path) for path in paths if not path.exists()]
        if missing:
            raise CommandError(f"not found: {', '.join(missing)}")
        if images is not None and not images.is_dir():
            raise CommandError(f"--images {images} is not a folder")
        progress = not options["no_progress"] and options["verbosity"] >= 1
        result = import_nuds_paths(paths, images_dir=images, progress=progress, limit=limit)
        if report:
            result.write_json(report)
        self.stdout.write(result.summary())
        index_imported_images(result, stdout=self.stdout)
        if result.failed:
            raise CommandError(f"{len(result.failed)} record(s) failed (see above).", returncode=1)
