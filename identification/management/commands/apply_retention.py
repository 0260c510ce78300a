"""Apply the retention now (the worker's schedule does it daily): see identification.retention."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from identification.retention import retention_apply


class Command(BaseCommand):
    help = (
        "Delete the raw photos and clear the sender's name, email and address of submissions decided "
        "more than OBVERSE_RETENTION_DAYS ago, and upload folders that no submission owns."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Only say what would be removed.")

    def handle(self, *args, dry_run: bool, **options):
        report = retention_apply(dry_run=dry_run)
        verb = "would clear" if dry_run else "cleared"
        self.stdout.write(
            f"{verb} {len(report.cleared)} submissions decided more than {settings.OBVERSE_RETENTION_DAYS} days ago, "
            f"{'would remove' if dry_run else 'removed'} {len(report.orphans)} orphan upload folders"
        )
        for submission_id in report.cleared:
            self.stdout.write(f"  {submission_id}")
        for name in report.orphans:
            self.stdout.write(f"  orphan folder {name}")
