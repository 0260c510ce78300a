"""Requeue or fail stuck submissions now (the worker's schedule does it every five minutes)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from identification.sweep import submission_sweep_stuck


class Command(BaseCommand):
    help = "Queue again the submissions the queue lost or whose worker died, and fail those whose attempts are used up."

    def handle(self, *args, **options):
        report = submission_sweep_stuck()
        self.stdout.write(f"requeued {len(report.requeued)}, failed {len(report.failed)}")
        for pk in report.requeued:
            self.stdout.write(f"  requeued {pk}")
        for pk in report.failed:
            self.stdout.write(f"  failed {pk}")
