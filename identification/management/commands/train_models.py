"""Train every learned part of the pipeline from the catalogue in the database."""

from __future__ import annotations

import json

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from identification import jobs, training


class Command(BaseCommand):
    help = (
        "Train side classifier, orientation, metadata calibration and embedding projection from the catalogue "
        "into a new model version, re-embed the catalogue for it, then activate it: searches use the previous "
        "version until the new one is complete (--no-reindex: activate at once). Approved review "
        "decisions are used as positives and hard negatives (--no-reviews to ignore them)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--limit", type=int, help="Use at most this many specimens (quick runs).")
        parser.add_argument(
            "--no-reindex",
            action="store_true",
            help="Activate the new version at once, without re-embedding the catalogue first (run reindex later).",
        )
        parser.add_argument(
            "--no-reviews",
            action="store_true",
            help="Ignore the review signal (approved matches and hard negatives from volunteers' reviews).",
        )
        parser.add_argument(
            "--background-if-untrained",
            action="store_true",
            help=(
                "Only if no version is active yet (or it was trained for another embedding recipe): "
                "queue the training for the worker and return at once."
            ),
        )

    def handle(
        self, *args, seed=0, limit=None, no_reindex=False, no_reviews=False, background_if_untrained=False, **options
    ):
        if background_if_untrained:
            from mlcore.train import current_recipes
            from mlcore.versions import active_version, stale_kind

            models_dir = settings.OBVERSE_MODELS_DIR
            active = active_version(models_dir)
            stale = stale_kind(models_dir, active, current_recipes(models_dir)) if active else None
            if active and not stale:
                self.stdout.write("A trained model version is active; nothing to do.")
                return
            jobs.training_request()
            reason = f"The active version was trained for another {stale} recipe" if active else "No trained models yet"
            self.stdout.write(f"{reason}: training queued for the worker (identification works meanwhile).")
            return
        try:
            report = training.models_train(
                seed=seed,
                limit=limit,
                reindex=not no_reindex,
                use_reviews=not no_reviews,
                progress=lambda message: self.stdout.write(message),
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        self.stdout.write(json.dumps(report.as_dict(), indent=2, default=str))
        feedback = report.metrics.get("feedback")
        if no_reviews:
            self.stdout.write("Review signal: not used (--no-reviews).")
        elif not feedback:
            self.stdout.write("Review signal: 0 review pairs used (no approved identifications yet).")
        else:
            self.stdout.write(
                f"Review signal: {feedback['positive_pairs']} review pairs used "
                f"({feedback['used']} of {feedback['examples']} reviewed photos, "
                f"{feedback['hard_negative_pairs']} hard-negative pairs)."
            )
