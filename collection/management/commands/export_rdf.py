"""``manage.py export_rdf [PATH]``: the published dataset as one RDF file, the dump Nomisma.org harvests."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from collection.linked_data.links import Links
from collection.linked_data.nomisma import DUMP_NAME, dataset_export


class Command(BaseCommand):
    help = (
        "Write every published type and public specimen in the Nomisma ontology, with the VoID description, "
        "to PATH (default: the file /linked-data/nomisma.rdf serves). Run it after imports, or nightly. "
        "URIs use OBVERSE_SITE_URL (or --base-url), which must be the site's public address."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path, nargs="?", default=None, metavar="PATH")
        parser.add_argument(
            "--format", choices=["rdf", "ttl", "jsonld"], default=None, help="Default: from PATH's suffix."
        )
        parser.add_argument("--base-url", default=None, help="The site's public address (default OBVERSE_SITE_URL).")

    def handle(self, *args, path: Path | None, format: str | None, base_url: str | None, **options):
        path = path or Path(settings.OBVERSE_LINKED_DATA_DIR) / DUMP_NAME
        links = Links(base_url.rstrip("/")) if base_url else Links.for_request(None)
        try:
            counts = dataset_export(path=path, links=links, fmt=format)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        except OSError as exc:
            raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from exc
        specimens, items, triples = counts["specimens"], counts["items"], counts["triples"]
        self.stdout.write(f"{specimens} specimens and {items} types ({triples} triples) written to {path}")
