"""The identification benchmark: the real path (mlcore + PostgreSQL + pgvector) on a labelled set.

It builds a throw-away catalogue (its own temporary database, media and models folders; the user's
data is never touched) from folders in the ``ans-roman`` layout, trains what the platform learns
with every query specimen left out (as ``train_models`` does), indexes the catalogue, then submits
query photos through the same services a visitor's upload goes through, leaving each query's own
specimen out of the index while it is answered. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from unittest import mock

import numpy as np
import psycopg
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.test.utils import override_settings
from PIL import Image

from bench.figures import QueryRow, identification_figures
from collection.models import ImageEmbedding, Specimen, SpecimenImage
from config import throwaway_db
from config.stopping import SigtermExit
from identification import indexing, services
from identification.catalogue import catalogue_records
from identification.pipeline_cache import embedding_version, get_pipeline, reset_pipeline
from mlcore.metadata import calibration_report
from mlcore.modelfiles import link_pretrained
from mlcore.train_backbone import Split


def _jpeg_upload(image: Image.Image, name: str) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=90)
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="image/jpeg")


def _drop_if_created(name: str, original_name: str) -> None:
    """Drop the throw-away database if ``create_test_db`` was stopped before it returned.

    Its migrations take seconds, and a SIGTERM there left the database behind. The connection is
    pointed back at the user's database first.
    """
    connection.close()
    connection.settings_dict["NAME"] = original_name
    try:
        throwaway_db.drop(name, **throwaway_db.server_params())
    except psycopg.Error as exc:  # do not hide why the run stopped
        sys.stderr.write(f"benchmark: could not drop the throw-away database {name}: {exc}\n")


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


class Command(BaseCommand):
    help = "Measure identification (recall@1/@8, side, metadata, latency) on a labelled set, end to end."

    def add_arguments(self, parser):
        parser.add_argument("--catalogue", action="append", required=True, help="Folder in the ans-roman layout.")
        parser.add_argument(
            "--queries",
            help="CSV with image,record_id[,side][,pair][,regime] (paths relative to the CSV); rows sharing a "
            "pair value form one two-photo query; figures are reported per regime.",
        )
        parser.add_argument("--limit", type=int, help="At most this many query coins (quick runs).")
        parser.add_argument(
            "--regime",
            choices=["good", "poor", "both"],
            default="both",
            help="Self-made queries: good phone photos (coin 500–1,000 px), poor ones (~150 px) or both.",
        )
        parser.add_argument(
            "--query-types",
            choices=["held-out", "all"],
            default="held-out",
            help="Self-made queries only of the types the shipped backbone never saw (its split's test "
            "types, mlcore.train_backbone), or of every type.",
        )
        parser.add_argument("--catalogue-limit", type=int, help="Import at most this many catalogue coins.")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--out", help="Also write the JSON here.")
        parser.add_argument(
            "--details", help="Write one JSON line per query here (truth, rank, sides, candidates): the failures."
        )
        parser.add_argument("--no-train", action="store_true", help="Use the models as they are (no training).")
        parser.add_argument(
            "--no-reindex", action="store_true", help="Skip timing a second indexing pass (what a retraining costs)."
        )
        parser.add_argument(
            "--enhance",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="Enhance small photos (mlcore.enhance) or not; default: the OBVERSE_ENHANCE setting.",
        )

    def handle(self, *args, **options):
        folders = [Path(folder) for folder in options["catalogue"]]
        for folder in folders:
            if not (folder / "labels.csv").exists():
                raise CommandError(f"{folder} has no labels.csv (expected the ans-roman layout).")
        work = Path(tempfile.mkdtemp(prefix="obverse-benchmark-"))
        # Stopped with SIGTERM (a timeout, `kill`), still drop the temporary folder and test database.
        stopping = SigtermExit().install()
        old_name = None
        original_name = connection.settings_dict["NAME"]
        test_name = f"obverse_benchmark_{os.getpid()}"
        try:
            models_dir = work / "models"
            link_pretrained(Path(settings.OBVERSE_MODELS_DIR), models_dir)
            settings.DATABASES["default"]["TEST"]["NAME"] = test_name  # keep Django's other TEST defaults
            old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
            with override_settings(
                MEDIA_ROOT=str(work / "media"),
                OBVERSE_PRIVATE_UPLOADS=str(work / "uploads"),
                OBVERSE_MODELS_DIR=models_dir,
                OBVERSE_INDEX_ON_IMPORT=False,
                OBVERSE_ANON_SUBMISSIONS_PER_HOUR=10**9,
                OBVERSE_ENHANCE=settings.OBVERSE_ENHANCE if options["enhance"] is None else options["enhance"],
            ):
                reset_pipeline()
                result = self._run(folders, models_dir, options)
        finally:
            stopping.cleanup()
            reset_pipeline()
            if old_name is not None:
                connection.creation.destroy_test_db(old_name, verbosity=0)
            else:
                _drop_if_created(test_name, original_name)
            shutil.rmtree(work, ignore_errors=True)
            stopping.restore()
        text = json.dumps(result, indent=2)
        self.stdout.write(text)
        if options.get("out"):
            Path(options["out"]).parent.mkdir(parents=True, exist_ok=True)
            Path(options["out"]).write_text(text)

    # --- steps ------------------------------------------------------------------------------

    def _run(self, folders: list[Path], models_dir: Path, options) -> dict:
        from collection.importers.tabular import import_csv_file
        from mlcore.dataset import load_ans_layout

        rng = np.random.default_rng(options["seed"])
        started = time.monotonic()
        for folder in folders:
            csv_path = folder / "labels.csv"
            if options.get("catalogue_limit"):
                csv_path = _head_csv(csv_path, options["catalogue_limit"], models_dir.parent / f"{folder.name}.csv")
            import_csv_file(csv_path, images_dir=folder)
        import_s = time.monotonic() - started
        imported = set(Specimen.objects.values_list("record_id", flat=True))
        labelled = [record for folder in folders for record in load_ans_layout(folder) if record.record_id in imported]
        by_record = {record.record_id: record for record in labelled}
        queries = self._queries(options, labelled, rng)
        query_records = {q["record_id"] for q in queries}

        train_s = None
        if not options["no_train"]:
            from mlcore.train import train_all

            started = time.monotonic()
            train_all(catalogue_records(exclude_record_ids=query_records), models_dir=models_dir, seed=options["seed"])
            train_s = round(time.monotonic() - started, 1)
            reset_pipeline()
        pipeline = get_pipeline()

        started = time.monotonic()
        image_ids = list(SpecimenImage.objects.exclude(image="").values_list("pk", flat=True))
        indexed = sum(indexing.catalogue_image_index(image_id=pk, pipeline=pipeline) for pk in image_ids)
        index_build_s = round(time.monotonic() - started, 1)
        # What a retraining costs the index: every image embedded again, from the cut-out just stored.
        reindex_s = None
        if not options["no_reindex"]:
            started = time.monotonic()
            for pk in image_ids:
                indexing.catalogue_image_index(image_id=pk, pipeline=pipeline)
            reindex_s = round(time.monotonic() - started, 1)

        rows, latencies, meta, details = [], [], defaultdict(list), []
        for query in queries:
            record = by_record[query["record_id"]]
            outcome = self._answer(query, record)
            ranked = outcome["ranked_uris"]
            rows.append(
                QueryRow(
                    record=record,
                    sides=tuple(truth or "" for _, truth in query["photos"]),
                    ranked=ranked,
                    predicted_sides=[predicted for predicted, _ in outcome["sides"]],
                    regime=query["regime"],
                    names=query["names"],
                )
            )
            details.append(
                {
                    "record_id": query["record_id"],
                    "type_id": record.type_id,
                    "images": query["names"],
                    "regime": query["regime"],
                    "photos": len(query["photos"]),
                    "sides": [{"predicted": predicted, "true": truth} for predicted, truth in outcome["sides"]],
                    "rank": ranked.index(record.type_id) + 1 if record.type_id in ranked else None,
                    "candidates": ranked,
                }
            )
            latencies.extend([outcome["latency_ms"] / len(query["photos"])] * len(query["photos"]))
            for field, (value, confidence) in outcome["metadata"].items():
                if record.labels.get(field):
                    meta[field].append((confidence, value == record.labels[field]))
        figures = identification_figures(rows, labelled)

        versions = _versions(pipeline)
        if options.get("details"):
            Path(options["details"]).parent.mkdir(parents=True, exist_ok=True)
            Path(options["details"]).write_text("".join(json.dumps(row) + "\n" for row in details))
        overall = figures["all"]
        return {
            **{key: overall[key] for key in ("queries", "pair_queries", "recall_at_1", "recall_at_8")},
            "recall_at_1_pair": overall["recall_at_1_pair"],
            "recall_at_8_pair": overall["recall_at_8_pair"],
            "design_recall_at_1": overall["design_recall_at_1"],
            "side_accuracy_single": overall["side_accuracy_single"],
            "side_accuracy_pair": overall["side_accuracy_pair"],
            "ceiling": overall["ceiling"],
            "regimes": {name: value for name, value in figures.items() if name != "all"},
            "metadata_accuracy": {
                field: round(float(np.mean([hit for _, hit in v])), 4) for field, v in sorted(meta.items())
            },
            # Accuracy of the most confident 50 / 80 / 100 % of the answers, and the calibration error.
            "metadata_calibration": {
                field: {k: report[k] for k in ("accuracy_at_coverage", "ece")}
                for field, v in sorted(meta.items())
                for report in [calibration_report(*zip(*v, strict=True))]
            },
            "misses": _misses([row for row in details if row["photos"] == 1], labelled),
            "latency_ms_p50": _percentile(latencies, 50),
            "latency_ms_p95": _percentile(latencies, 95),
            "index_build_s": index_build_s,
            "reindex_s": reindex_s,
            "train_s": train_s,
            "import_s": round(import_s, 1),
            "catalogue_images": indexed,
            "enhance": settings.OBVERSE_ENHANCE,
            "seed": options["seed"],
            "limit": options.get("limit"),
            "query_types": None if options.get("queries") else options["query_types"],
            "model_versions": versions,
        }

    def _queries(self, options, labelled, rng) -> list[dict]:
        """Query photos: from --queries, or self-made phone-like photos of coins whose type has 2+ specimens.

        Each query is {"record_id", "photos": [(image, true side or None)], "regime", "names"}. A self-made
        coin gives a photo of each side and the pair of both, in every regime asked for.
        """
        if options.get("queries"):
            return _csv_queries(Path(options["queries"]), labelled, options.get("limit"))
        from mlcore.degrade import degrade_like_phone

        held_out = Split.of(labelled).test if options["query_types"] == "held-out" else None
        by_type = defaultdict(list)
        for record in labelled:
            if record.type_id and len(record.images) == 2 and (held_out is None or record.type_id in held_out):
                by_type[record.type_id].append(record)
        candidates = [r for records in by_type.values() if len(records) >= 2 for r in records]
        order = rng.permutation(len(candidates))
        chosen = [candidates[i] for i in order[: options["limit"] or len(candidates)]]
        regimes = ["poor", "good"] if options["regime"] == "both" else [options["regime"]]
        queries = []
        for regime in regimes:
            for record in chosen:
                photos = {
                    side: degrade_like_phone(Image.open(path), rng, regime=regime)
                    for side, path in sorted(record.images.items())
                }
                names = {side: f"{record.record_id}:{side}:{regime}" for side in photos}
                for side, photo in photos.items():
                    queries.append(
                        {
                            "record_id": record.record_id,
                            "photos": [(photo, side)],
                            "regime": regime,
                            "names": [names[side]],
                        }
                    )
                queries.append(
                    {
                        "record_id": record.record_id,
                        "photos": [(p, s) for s, p in photos.items()],
                        "regime": regime,
                        "names": list(names.values()),
                    }
                )
        return queries

    def _answer(self, query: dict, record) -> dict:
        """Submit the query through the services with its own specimen hidden from the index."""
        specimen_ids = list(Specimen.objects.filter(record_id=query["record_id"]).values_list("pk", flat=True))
        hidden = list(ImageEmbedding.objects.filter(image__specimen_id__in=specimen_ids).values_list("pk", "item_id"))
        ImageEmbedding.objects.filter(pk__in=[pk for pk, _ in hidden]).update(item=None)
        try:
            files = [_jpeg_upload(photo, f"query-{i}.jpg") for i, (photo, _) in enumerate(query["photos"])]
            started = time.monotonic()
            # Processed right here, as the worker would, instead of through the queue.
            with mock.patch.object(services, "submission_enqueue", lambda **kwargs: None):
                submission = services.submission_create(
                    files=files, requester_name="benchmark", requester_email="benchmark@example.org"
                )
            services.submission_process(submission_id=submission.pk)
            latency_ms = (time.monotonic() - started) * 1000
        finally:
            for pk, item_id in hidden:
                ImageEmbedding.objects.filter(pk=pk).update(item_id=item_id)
        submission.refresh_from_db()
        ranked = [c.item.uri for c in submission.candidates.select_related("item").order_by("rank")]
        images = list(submission.images.order_by("position"))
        metadata = {}
        if len(images) == 1:
            metadata = {
                field: (p.get("value"), float(p.get("confidence") or 0.0)) for field, p in images[0].metadata.items()
            }
        return {
            "ranked_uris": ranked,
            "latency_ms": latency_ms,
            "sides": [(image.side, truth) for image, (_, truth) in zip(images, query["photos"], strict=False)],
            "metadata": metadata,
            "status": submission.status,
        }


def _csv_queries(csv_path: Path, labelled, limit: int | None) -> list[dict]:
    """Queries from a CSV (image, record_id[, side][, pair][, regime]); rows sharing ``pair`` form one query."""
    with csv_path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    missing = {"image", "record_id"} - set(rows[0] if rows else {})
    if missing:
        raise CommandError(f"{csv_path} has no {', '.join(sorted(missing))} column.")
    known = {record.record_id for record in labelled}
    unknown = sorted({row["record_id"] for row in rows} - known)
    if unknown:  # a query of a coin outside the catalogue has no type to find: not a miss, a mistake
        listed = ", ".join(unknown[:5]) + (" …" if len(unknown) > 5 else "")
        raise CommandError(f"{len(unknown)} query record(s) are not in the catalogue: {listed}")
    groups: dict[str, list[dict]] = {}
    for number, row in enumerate(rows):
        groups.setdefault(row.get("pair") or f"row:{number}", []).append(row)
    queries = []
    for key, group in groups.items():
        if (
            len(group) > 2
            or len({row["record_id"] for row in group}) > 1
            or len({row.get("regime") or "" for row in group}) > 1
        ):
            raise CommandError(f"Pair {key!r} in {csv_path} must be two photos of one coin in one regime.")
        queries.append(
            {
                "record_id": group[0]["record_id"],
                "photos": [(Image.open(csv_path.parent / row["image"]), row.get("side") or None) for row in group],
                "regime": group[0].get("regime") or "",
                "names": [row["image"] for row in group],
            }
        )
    return queries[:limit] if limit else queries


def _misses(rows: list[dict], labelled) -> dict:
    """What the single photos that missed at rank 1 were taken for: how close the wrong first item was.

    For each metadata field, the share of misses whose first candidate has the true type's value:
    a miss that keeps ruler and denomination is a type told apart by a legend, a mint mark or a
    control letter, which a 150-px phone photo rarely shows. Also how many were searched on the
    wrong side, and where the true type was ranked (2–8, or not in the candidates).
    """
    labels = {record.type_id: record.labels for record in labelled if record.type_id}
    missed = [row for row in rows if row["rank"] != 1]
    if not missed:
        return {"missed_at_1": 0}
    first = [labels.get(row["candidates"][0], {}) if row["candidates"] else {} for row in missed]
    truth = [labels.get(row["type_id"], {}) for row in missed]

    def share(keys: tuple[str, ...]) -> float:
        same = [all(t.get(k) and f.get(k) == t.get(k) for k in keys) for f, t in zip(first, truth, strict=True)]
        return round(float(np.mean(same)), 4)

    return {
        "missed_at_1": len(missed),
        "first_candidate_shares": {
            **{field: share((field,)) for field in ("authority", "mint", "denomination", "material")},
            "authority+denomination": share(("authority", "denomination")),
            "authority+mint+denomination": share(("authority", "mint", "denomination")),
        },
        "wrong_side": round(
            float(np.mean([any(s["true"] and s["predicted"] != s["true"] for s in r["sides"]) for r in missed])), 4
        ),
        "true_type_ranked_2_to_8": sum(1 for row in missed if row["rank"]),
        "true_type_not_in_candidates": sum(1 for row in missed if not row["rank"]),
    }


def _versions(pipeline) -> dict:
    name, version = embedding_version(pipeline)
    versions = {"embedding": f"{name}@{version}"}
    describe = getattr(pipeline, "model_versions", None)
    if callable(describe):
        versions.update(describe())
    return versions


def _head_csv(path: Path, limit: int, target: Path) -> Path:
    """The header and first ``limit`` rows of a CSV (parsed, so quoted newlines survive)."""
    with path.open(encoding="utf-8", newline="") as source, target.open("w", encoding="utf-8", newline="") as out:
        reader = csv.reader(source)
        writer = csv.writer(out)
        for i, row in enumerate(reader):
            if i > limit:
                break
            writer.writerow(row)
    return target
