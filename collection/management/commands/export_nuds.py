"""``manage.py export_nuds DIR [--private]``: one NUDS XML file per specimen, as import_nuds reads them."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from collection.linked_data.links import Links
from collection.linked_data.nuds import catalogue_nuds_export


class Command(BaseCommand):
    help = (
        "Write every public specimen as a physical NUDS record (DIR/<record_id>.xml), the format of the ANS's "
        "Numishare, which import_nuds reads back to the same rows. Links use OBVERSE_SITE_URL (or --base-url)."
    )

    def add_arguments(self, parser):
        parser.add_argument("folder", type=Path, metavar="DIR")
        parser.add_argument(
            "--private",
            action="store_true",
            help="Every specimen, public or not, with findspot and provenance: for moving a catalogue, not publishing.",
        )
        parser.add_argument("--base-url", default=None, help="The site's public address (default OBVERSE_SITE_URL).")

    def handle(self, *args, folder: Path, private: bool, base_url: str | None, **options):
        if folder.exists() and not folder.is_dir():
            raise CommandError(f"{folder} is a file; give a folder")
        links = Links(base_url.rstrip("/")) if base_url else Links.for_request(None)
        try:
            written = catalogue_nuds_export(folder=folder, links=links, private=private)
        except OSError as exc:
            raise CommandError(f"cannot write into {folder}: {exc.strerror or exc}") from exc
        kind = "all specimens, with private fields" if private else "public specimens"
        self.stdout.write(f"{written} NUDS records ({kind}) written to {folder}")
