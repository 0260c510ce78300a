"""``manage.py restore PATH``: put a backup made by ``manage.py backup`` back (see collection.backup)."""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from collection.backup import BackupError, backup_read, backup_restore, database_is_empty, refuse_while_in_use


class Command(BaseCommand):
    help = (
        "Restore a backup: checks every checksum first, refuses while the web server, the worker or any other "
        "client is connected to the database, replaces the database (pg_restore --clean, one transaction), the "
        "media folder and the private uploads, verifies row counts and files, then migrates the database to "
        "this code's schema."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path, help="A folder written by manage.py backup.")
        parser.add_argument("--yes", action="store_true", help="Replace a database that is not empty without asking.")

    def handle(self, *args, path: Path, yes: bool, **options):
        try:
            manifest = backup_read(path=path)
            refuse_while_in_use()  # before asking anything: the site must be stopped first
            replace = yes
            if not yes and not database_is_empty():
                replace = self._confirm(manifest)
            report = backup_restore(path=path, replace=replace)
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        files = ", ".join(f"{n} {name} files" for name, n in report.files.items())
        migrated = (
            f" Migrated to this code's schema: {', '.join(report.migrated)}."
            if report.migrated
            else " The schema was already this code's."
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Restored {report.rows} rows in {report.tables} tables and {files} from {path}; "
                f"row counts and {report.verified_files} file checksums verified.{migrated}"
            )
        )

    def _confirm(self, manifest: dict) -> bool:
        if not sys.stdin.isatty():
            raise CommandError("The database is not empty; rerun with --yes to replace everything in it.")
        self.stdout.write(
            f"The database is not empty. Restoring the backup of {manifest['created_at']} replaces ALL its "
            "data, the media folder and the private uploads."
        )
        if input("Type 'yes' to continue: ").strip().lower() != "yes":
            raise CommandError("Restore cancelled; nothing was changed.")
        return True
