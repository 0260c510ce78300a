"""``manage.py backup PATH``: a consistent copy of the database, media and private uploads (see collection.backup)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from collection.backup import BackupError, backup_create


class Command(BaseCommand):
    help = (
        "Back up the database (pg_dump, custom format, one snapshot), the media folder and the private "
        "uploads into the new folder PATH, with a manifest of row counts and sha256 checksums."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path, help="A folder that does not exist yet (or is empty).")

    def handle(self, *args, path: Path, **options):
        try:
            manifest = backup_create(path=path)
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        tables = manifest["database"]["tables"]
        files = {name: len(part["files"]) for name, part in manifest["folders"].items()}
        self.stdout.write(
            self.style.SUCCESS(
                f"Backed up {sum(tables.values())} rows in {len(tables)} tables and "
                f"{', '.join(f'{n} {name} files' for name, n in files.items())} to {path}."
            )
        )
        if manifest["missing_files"]:
            missing = manifest["missing_files"]
            self.stderr.write(
                f"{len(missing)} files named in the database were not in the media folder "
                f"(first: {', '.join(missing[:3])}); see missing_files in the manifest."
            )
