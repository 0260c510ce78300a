"""Write the review workflow's training signal (accepted matches, hard negatives) as JSON lines.

The learning loop's input for ``manage.py train_models``: one line per query photo of a
curator-approved identification, with its true item and the look-alike items that were ranked
above it or rejected (see ``review.selectors.training_signal``).
"""

from __future__ import annotations

import json
from dataclasses import asdict

from django.core.management.base import BaseCommand

from review.selectors import training_signal


class Command(BaseCommand):
    help = "Export accepted matches (positives) and rejected/outranking candidates (hard negatives) as JSON lines."

    def add_arguments(self, parser):
        parser.add_argument("--output", "-o", help="File to write (default: standard output).")

    def handle(self, *args, output=None, **options):
        pairs = training_signal()
        lines = [json.dumps(asdict(pair)) for pair in pairs]
        if output:
            with open(output, "w", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + ("\n" if lines else ""))
            self.stderr.write(f"wrote {len(lines)} training pairs to {output}")
        else:
            for line in lines:
                self.stdout.write(line)
