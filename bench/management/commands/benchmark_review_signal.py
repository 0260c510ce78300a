"""Does learning from reviews help? The identification benchmark, before and after a simulated review loop.

``manage.py benchmark_review_signal --catalogue DIR --catalogue-limit 200 --limit 25 --simulate-reviews 40``

Same throw-away setup as ``benchmark_identification`` (its own database, media and models
folders). Query coins come from types with two or more specimens; ``--limit`` of them are the test
queries and ``--simulate-reviews`` N *other* coins (same pool of types) are submitted first. Both
sets are left out of training. Then:

1. train (no review signal exists yet) and index the catalogue: the "without" model;
2. the N review coins are submitted as phone-like photos (both sides) through the real services and
   answered by that model; two volunteers claim and match the true item, a curator approves
   (``review.services``), so the items ranked above the true one become hard negatives exactly as
   ``review.selectors.training_signal`` reads them. The specimens the approvals create are kept
   out of training and search, so both models see the same catalogue;
3. the test queries are answered by the "without" model;
4. ``identification.training.models_train`` retrains with the same seed and records, now with the review signal
   (re-indexing when the embedding changed), and the same test photos are answered again.

Prints one JSON object: both figure sets, the review loop's own figures and the training metrics.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from unittest import mock

import numpy as np
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import CommandError
from django.test.utils import override_settings

from collection.models import Specimen, SpecimenImage
from collection.roles import CURATOR, VOLUNTEER, ensure_role_groups
from identification import indexing, training
from identification.management.commands import benchmark_identification as base
from identification.models import Submission, SubmissionStatus
from identification.pipeline_cache import get_pipeline, reset_pipeline
from mlcore.retrieval import recall_at
from review import rules
from review import services as review_services
from review.selectors import training_signal


class Command(base.Command):
    help = "Measure identification with and without training on simulated volunteer reviews (same queries, seed)."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--simulate-reviews",
            type=int,
            default=40,
            help="Review coins answered, reviewed and approved before retraining (other coins than the test queries).",
        )

    def _run(self, folders: list[Path], models_dir: Path, options) -> dict:
        from collection.importers.tabular import import_csv_file
        from mlcore.dataset import load_ans_layout

        if options.get("queries"):
            raise CommandError("--queries is not supported here: review and test coins are drawn from the catalogue.")
        if options["no_train"]:
            raise CommandError("--no-train makes no sense here: the point is to compare two trainings.")
        started = time.monotonic()
        for folder in folders:
            csv_path = folder / "labels.csv"
            if options.get("catalogue_limit"):
                csv_path = base._head_csv(
                    csv_path, options["catalogue_limit"], models_dir.parent / f"{folder.name}.csv"
                )
            import_csv_file(csv_path, images_dir=folder)
        import_s = round(time.monotonic() - started, 1)
        imported = set(Specimen.objects.values_list("record_id", flat=True))
        labelled = [record for folder in folders for record in load_ans_layout(folder) if record.record_id in imported]
        by_record = {record.record_id: record for record in labelled}

        # One seeded draw of coins (and their phone-like photos): the first ``limit`` coins are the
        # test queries, the next N the review coins.
        rng = np.random.default_rng(options["seed"])
        n_reviews = options["simulate_reviews"]
        test_limit = options.get("limit")
        drawn = self._queries({**options, "limit": (test_limit + n_reviews) if test_limit else None}, labelled, rng)
        order = list(dict.fromkeys(query["record_id"] for query in drawn))
        test_coins = set(order[: test_limit or max(1, len(order) - n_reviews)])
        review_coins = [r for r in order if r not in test_coins][:n_reviews]
        test_queries = [q for q in drawn if q["record_id"] in test_coins]
        review_queries = [q for q in drawn if q["record_id"] in set(review_coins) and len(q["photos"]) == 2]
        left_out = test_coins | set(review_coins)

        with override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"):
            # 1. The model before any review, then the index.
            started = time.monotonic()
            before = training.models_train(seed=options["seed"], exclude_record_ids=left_out, reindex=False)
            train_s = round(time.monotonic() - started, 1)
            reset_pipeline()
            pipeline = get_pipeline()
            started = time.monotonic()
            image_ids = list(SpecimenImage.objects.exclude(image="").values_list("pk", flat=True))
            indexed = sum(indexing.catalogue_image_index(image_id=pk, pipeline=pipeline) for pk in image_ids)
            index_build_s = round(time.monotonic() - started, 1)

            # 2. The review loop, through the real services.
            started = time.monotonic()
            loop = self._simulate_reviews(review_queries)
            loop["seconds"] = round(time.monotonic() - started, 1)

            # 3. Test queries, without the review signal.
            without = self._measure(test_queries, by_record)
            without["model_versions"] = base._versions(pipeline)

            # 4. Retrain with the signal (same records, same seed), re-index if the embedding changed.
            started = time.monotonic()
            after = training.models_train(seed=options["seed"], exclude_record_ids=left_out, reindex=True)
            retrain_s = round(time.monotonic() - started, 1)
            pipeline = get_pipeline()
            with_reviews = self._measure(test_queries, by_record)
            with_reviews["model_versions"] = base._versions(pipeline)

        return {
            "without_reviews": without,
            "with_reviews": with_reviews,
            "reviews": loop,
            "training": {
                "without_reviews": {"embedding": before.metrics.get("embedding"), "seconds": train_s},
                "with_reviews": {
                    "embedding": after.metrics.get("embedding"),
                    "feedback": after.metrics.get("feedback"),
                    "feedback_pairs": after.feedback_pairs,
                    "seconds_with_reindex": retrain_s,
                },
            },
            "test_coins": len(test_coins),
            "review_coins": len(review_coins),
            "catalogue_images": indexed,
            "index_build_s": index_build_s,
            "import_s": import_s,
            "seed": options["seed"],
            "catalogue_limit": options.get("catalogue_limit"),
        }

    def _measure(self, queries: list[dict], by_record: dict) -> dict:
        """Answer the test queries with the current models: recall@1/@8 (single photos), pair recall@8, metadata."""
        singles, pairs, meta = [], [], defaultdict(list)
        for query in queries:
            record = by_record.get(query["record_id"])
            outcome = self._answer(query, record)
            (pairs if len(query["photos"]) == 2 else singles).append((outcome["ranked_uris"], record.type_id))
            for field, value in outcome["metadata"].items():
                if record.labels.get(field):
                    meta[field].append(value == record.labels[field])

        return {
            "queries": len(singles),
            "pair_queries": len(pairs),
            "recall_at_1": recall_at(singles, 1),
            "recall_at_8": recall_at(singles, 8),
            "recall_at_1_pair": recall_at(pairs, 1),
            "recall_at_8_pair": recall_at(pairs, 8),
            "metadata_accuracy": {field: round(float(np.mean(v)), 4) for field, v in sorted(meta.items())},
        }

    def _simulate_reviews(self, queries: list[dict]) -> dict:
        """Submit each review coin, let two volunteers match its true item and a curator approve it.

        The specimens approvals create are detached from their item afterwards (kept out of training
        and search) so that the two models compared differ only by the review signal.
        """
        ensure_role_groups()
        users = get_user_model().objects
        volunteers = []
        for number in range(1, rules.consensus_required() + 1):
            user, _ = users.get_or_create(username=f"benchmark-volunteer-{number}")
            user.groups.add(Group.objects.get(name=VOLUNTEER))
            volunteers.append(user)
        curator, _ = users.get_or_create(username="benchmark-curator")
        curator.groups.add(Group.objects.get(name=CURATOR))
        ranks, approved = [], 0
        for query in queries:
            item_id = Specimen.objects.filter(record_id=query["record_id"]).values_list("item_id", flat=True).first()
            if item_id is None:
                continue
            before = set(Submission.objects.values_list("pk", flat=True))
            self._answer(query, None)
            submission = Submission.objects.exclude(pk__in=before).get()
            if submission.status != SubmissionStatus.AWAITING_REVIEW:
                continue  # processing failed: nothing to review
            rank = submission.candidates.filter(item_id=item_id).values_list("rank", flat=True).first()
            ranks.append(rank)
            with (
                mock.patch.object(review_services, "index_job_start", lambda **kwargs: None),
                mock.patch.object(review_services, "_notify", lambda *args, **kwargs: None),
            ):
                for volunteer in volunteers:
                    review_services.submission_claim(submission_id=submission.pk, user=volunteer)
                    review_services.review_submit(
                        submission_id=submission.pk, user=volunteer, decision="match", item_id=item_id
                    )
                proposal = submission.proposals.get(status="pending")
                specimen = review_services.proposal_approve(proposal_id=proposal.pk, user=curator)
            Specimen.objects.filter(pk=specimen.pk).update(item=None)
            approved += 1
        found = [r for r in ranks if r is not None]
        signal = training_signal()
        return {
            "submitted": len(ranks),
            "approved": approved,
            "true_item_top1": sum(1 for r in found if r == 1),
            "true_item_top8": sum(1 for r in found if r <= 8),
            "training_pairs": len(signal),
            "hard_negative_items": sum(len(p.hard_negative_item_ids) for p in signal),
        }
