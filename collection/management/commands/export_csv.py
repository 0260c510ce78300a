"""``manage.py export_csv PATH [--images]``: write the catalogue as CSV in the layout import_csv reads."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from collection.exporters import catalogue_csv_export_file


class Command(BaseCommand):
    help = (
        "Export every specimen with its item as CSV in the generic import layout (docs/importing.md), so the "
        "file re-imports with import_csv. Cells a spreadsheet would run as formulas are neutralised with a "
        "leading single quote. The file holds private fields (findspot, provenance)."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path, metavar="PATH")
        parser.add_argument(
            "--images",
            action="store_true",
            help="Add obverse_image/reverse_image paths relative to the media folder (re-import with --images).",
        )

    def handle(self, *args, path: Path, images: bool, **options):
        if path.is_dir():
            raise CommandError(f"{path} is a folder; give a file name such as {path / 'catalogue.csv'}")
        try:
            result = catalogue_csv_export_file(path=path, include_images=images)
        except OSError as exc:
            raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from exc
        self.stdout.write(str(result))
