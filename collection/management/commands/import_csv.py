"""``manage.py import_csv FILE [--images DIR] [--source NAME]``: import a catalogue CSV (docs/importing.md)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from collection.importers.base import index_imported_images
from collection.importers.tabular import import_csv_file
from collection.services import source_get_or_create


class Command(BaseCommand):
    help = (
        "Import a catalogue CSV: the generic layout documented in docs/importing.md, or the ANS labels.csv. "
        "Image paths are relative to the CSV's folder, or to --images."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, metavar="FILE")
        parser.add_argument("--images", type=Path, default=None, metavar="DIR", help="Folder image paths start from.")
        parser.add_argument("--source", default=None, metavar="NAME", help="Credit every row to this source.")
        parser.add_argument("--report", type=Path, default=None, metavar="FILE", help="Also write the result as JSON.")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")

    def handle(self, *args, file: Path, images: Path | None, source: str | None, report: Path | None, **options):
        if not file.is_file():
            raise CommandError(f"not found: {file}")
        if images is not None and not images.is_dir():
            raise CommandError(f"--images {images} is not a folder")
        source_row = source_get_or_create(name=source) if source else None
        progress = not options["no_progress"] and options["verbosity"] >= 1
        result = import_csv_file(file, images_dir=images, source=source_row, progress=progress)
        if report:
            result.write_json(report)
        self.stdout.write(result.summary())
        index_imported_images(result, stdout=self.stdout)
        if result.failed:
            raise CommandError(f"{len(result.failed)} record(s) failed (see above).", returncode=1)
