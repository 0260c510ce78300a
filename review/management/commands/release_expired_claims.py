"""Return submissions whose review claim expired to the queue (run every few minutes, e.g. from cron)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from review.services import claims_release_expired


class Command(BaseCommand):
    help = "Release expired review claims so abandoned submissions return to the volunteers' queue."

    def handle(self, *args, **options):
        released = claims_release_expired()
        self.stdout.write(f"released {released} expired claim{'s' if released != 1 else ''}")
