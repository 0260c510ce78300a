"""Train every learned part of the pipeline from the catalogue in the database."""

from __future__ import annotations

import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from identification.catalogue import catalogue_records
from identification.pipeline import reset_pipeline


class Command(BaseCommand):
    help = "Train side classifier, orientation, metadata and embedding parts from the catalogue (new version)."

    def add_arguments(self, parser):
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--limit", type=int, help="Use at most this many specimens (quick runs).")

    def handle(self, *args, seed=0, limit=None, **options):
        from mlcore.train import train_all

        records = catalogue_records()
        if limit:
            records = records[:limit]
        if len(records) < 4:
            raise CommandError(f"The catalogue has {len(records)} specimens with images; training needs more.")
        self.stdout.write(f"training on {len(records)} specimens …")
        report = train_all(records, models_dir=settings.OBVERSE_MODELS_DIR, seed=seed)
        reset_pipeline()
        self.stdout.write(json.dumps(getattr(report, "__dict__", report), indent=2, default=str))
