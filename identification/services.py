"""Identification services: accept a submission, process it in the background, search the catalogue.

Every write goes through a function here; views, API and tasks stay thin. State changes are
race-safe (conditional UPDATEs), tasks take ids and are enqueued after the transaction commits,
and a rerun after a crash finishes the job without duplicating anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from pgvector.django import CosineDistance

from collection.models import ImageEmbedding, Item, Side, SpecimenImage
from identification.models import (
    Candidate,
    DeclaredSide,
    ProcessingStep,
    Submission,
    SubmissionImage,
    SubmissionStatus,
)
from identification.pipeline import get_pipeline

# How many nearest images are read per turn before grouping them into items (several specimens of one
# item must not crowd out other items), and how many vote for the metadata: mlcore's constants, so
# that `python -m mlcore process --catalogue` ranks as the platform does (numpy only, no torch).
from mlcore.lookup import METADATA_NEIGHBOURS, NEIGHBOUR_IMAGES

logger = logging.getLogger(__name__)

CANDIDATES = 8
ALLOWED_FILTER_KINDS = ("authority", "mint", "material", "denomination", "region")
# Statuses in which a submission's candidates are shown to the sender and can still be judged.
REVIEWABLE_STATUSES = (
    SubmissionStatus.AWAITING_REVIEW,
    SubmissionStatus.IN_REVIEW,
    SubmissionStatus.NEEDS_EXPERT,
    SubmissionStatus.PROPOSED,
)


class PermanentProcessingError(Exception):
    """The input itself is bad (not an image, no coin found): retrying cannot help."""


def private_uploads() -> FileSystemStorage:
    """Raw uploads, kept outside the public media folder until re-encoded without metadata."""
    return FileSystemStorage(location=settings.OBVERSE_PRIVATE_UPLOADS)


class StorageUnavailable(Exception):
    """Photos cannot be stored now (disk full, or the uploads folder unwritable): nothing was kept; retry later.

    ``status`` is the HTTP status to answer with: 507 Insufficient Storage for a full disk, else 503.
    """

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    @classmethod
    def from_os_error(cls, exc: OSError) -> StorageUnavailable:
        import errno

        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return cls("The server has no room to store photos right now. Please try again later.", status=507)
        return cls("The server cannot store photos right now. Please try again later.", status=503)


def _uploads_discard(storage: FileSystemStorage, submission_id) -> None:
    """Remove a submission's upload folder, including a file left half-written by a full disk."""
    import shutil

    shutil.rmtree(storage.path(str(submission_id)), ignore_errors=True)


# --- Accepting a submission -------------------------------------------------------------------


def _rate_limited(*, client_ip: str | None, email: str) -> bool:
    """Whether this network or this email address has used up the anonymous submissions of the last hour.

    Only anonymous submissions count (signed-in users and API partners are limited elsewhere, if at
    all). An IPv6 client is counted by its /64 network, which one household or phone usually holds
    whole; an email by its address without a "+tag" and case, so "Ada+1@x.org" is "ada@x.org".
    """
    import ipaddress

    from django.db.models import BooleanField, Q
    from django.db.models.expressions import RawSQL

    since = timezone.now() - timedelta(hours=1)
    recent = Submission.objects.filter(created_at__gte=since, submitted_by__isnull=True)
    limit = settings.OBVERSE_ANON_SUBMISSIONS_PER_HOUR
    if client_ip:
        try:
            address = ipaddress.ip_address(client_ip)
        except ValueError:
            address = None
        if address is not None and address.version == 6 and address.ipv4_mapped is None:
            network = str(ipaddress.ip_network(f"{address}/64", strict=False))
            same_network = RawSQL("client_ip <<= %s::inet", [network], output_field=BooleanField())
            if recent.filter(same_network).count() >= limit:
                return True
        elif recent.filter(client_ip=client_ip).count() >= limit:
            return True
    local, at, domain = email.strip().lower().rpartition("@")
    if not at or not local:
        return False
    base = local.split("+", 1)[0]
    same_person = Q(requester_email__iexact=f"{base}@{domain}") | Q(
        requester_email__istartswith=f"{base}+", requester_email__iendswith=f"@{domain}"
    )
    return recent.filter(same_person).count() >= limit


# Markup at the start of a file (or anywhere in its first KiB, as in GIF/HTML polyglots) is what a
# browser would sniff as a page; such an upload is refused at once, whatever its name or declared type.
MARKUP_SIGNATURES = (b"<html", b"<svg", b"<script", b"<!doctype", b"<body", b"<iframe")


def _is_markup(upload: UploadedFile) -> bool:
    upload.seek(0)
    head = upload.read(1024)
    upload.seek(0)
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n\x00").lower()
    return stripped.startswith(b"<") or any(signature in head.lower() for signature in MARKUP_SIGNATURES)


def decode_limits():
    """The photo limits of this site: mlcore's, with the upload size the settings allow.

    The upload check and the worker's decoding use the same ones, so a photo accepted at the door is
    not refused by the worker for its size.
    """
    from mlcore.imageio import DecodeLimits

    return DecodeLimits(max_bytes=settings.OBVERSE_MAX_UPLOAD_BYTES)


def submission_validate(
    *,
    files: Sequence[UploadedFile],
    sides: Sequence[str],
    requester_name: str,
    requester_email: str,
    user,
    client_ip,
    contact_required: bool = True,
) -> dict[str, list[str]]:
    """Field → reasons; empty when the submission may be accepted.

    Cheap checks only: sizes, the photo's header (no pixel is decoded), contact details and the
    anonymous rate limit. Decoding is the worker's, which fails the submission if the pixels are damaged.
    """
    from mlcore.imageio import ImageDecodeError, probe_image

    errors: dict[str, list[str]] = {}
    if not files:
        errors["images"] = ["Add one or two photos."]
    elif len(files) > 2:
        errors["images"] = ["At most two photos (one per side)."]
    else:
        for upload in files:
            if upload.size == 0:
                errors.setdefault("images", []).append(f"{upload.name}: the file is empty.")
            elif upload.size > settings.OBVERSE_MAX_UPLOAD_BYTES:
                limit_mb = settings.OBVERSE_MAX_UPLOAD_BYTES // 2**20
                errors.setdefault("images", []).append(f"{upload.name}: larger than {limit_mb} MB.")
            elif _is_markup(upload):
                errors.setdefault("images", []).append(
                    f"{upload.name}: this is a web page or drawing (HTML/SVG), not a photo. Upload a JPEG, PNG or WebP."
                )
            else:
                # The header only (format, dimensions): documents, bombs and tiny or strip-shaped
                # pictures are refused here, with nothing stored; damaged pixel data is the worker's.
                try:
                    probe_image(upload, limits=decode_limits())
                except ImageDecodeError as exc:
                    errors.setdefault("images", []).append(f"{upload.name}: {exc}")
    if sides and len(sides) != len(files):
        errors["sides"] = ["Give one side per photo (obverse, reverse or unknown)."]
    elif any(side not in DeclaredSide.values for side in sides):
        errors["sides"] = ["Each side must be one of: obverse, reverse, unknown."]
    anonymous = user is None or not user.is_authenticated
    if anonymous:
        if contact_required and not requester_name.strip():
            errors["requester_name"] = ["Tell us your name so a curator can reply."]
        if contact_required and not requester_email.strip():
            errors["requester_email"] = ["An email address is required so we can tell you the result."]
        if not errors and _rate_limited(client_ip=client_ip, email=requester_email):
            limit = settings.OBVERSE_ANON_SUBMISSIONS_PER_HOUR
            errors["non_field_errors"] = [
                f"Too many submissions in the last hour (at most {limit} from one network or email address); "
                "please try again later."
            ]
    return errors


def submission_create(
    *,
    files: Sequence[UploadedFile],
    sides: Sequence[str] = (),
    notes: str = "",
    requester_name: str = "",
    requester_email: str = "",
    user=None,
    client_ip: str | None = None,
    contact_required: bool = True,
) -> Submission:
    """Store a new submission and its raw photos, then enqueue processing once the rows are committed.

    Raises ValidationError with a {field: [reasons]} dict for bad input; nothing is stored then.
    ``contact_required=False`` is for the example-photo library, where a visitor only watches the process.
    """
    errors = submission_validate(
        files=files,
        sides=sides,
        requester_name=requester_name,
        requester_email=requester_email,
        user=user,
        client_ip=client_ip,
        contact_required=contact_required,
    )
    if errors:
        raise ValidationError(errors)
    storage = private_uploads()
    # The id (a new UUID) is known before anything is written, so a failure removes the whole folder.
    submission = Submission(
        submitted_by=user if user is not None and user.is_authenticated else None,
        requester_name=requester_name.strip(),
        requester_email=requester_email.strip(),
        notes=notes.strip(),
        client_ip=client_ip,
    )
    try:
        with transaction.atomic():
            submission.save(force_insert=True)
            for position, upload in enumerate(files):
                name = storage.save(f"{submission.pk}/{position}.upload", upload)
                SubmissionImage.objects.create(
                    submission=submission,
                    position=position,
                    declared_side=sides[position] if sides else DeclaredSide.UNKNOWN,
                    upload_name=(upload.name or "")[:255],
                    upload_path=name,
                )
            # robust: a failed enqueue (the database restarting just after the commit) must not undo
            # a stored submission; it is logged, and the sweep (submission_sweep_stuck) queues it later.
            transaction.on_commit(lambda: submission_enqueue(submission_id=submission.pk), robust=True)
    except OSError as exc:  # disk full or folder unwritable: no rows (rolled back), no files
        _uploads_discard(storage, submission.pk)
        logger.error("cannot store uploads in %s: %s", storage.location, exc)
        raise StorageUnavailable.from_os_error(exc) from exc
    except Exception:
        _uploads_discard(storage, submission.pk)  # no orphan files when the rows were rolled back
        raise
    return submission


def submission_enqueue(*, submission_id) -> None:
    """Queue the background processing of a submission (call after commit)."""
    from django_q.tasks import async_task

    async_task("identification.tasks.process_submission", str(submission_id), task_name=f"submission-{submission_id}")


# --- Processing -------------------------------------------------------------------------------


def _claim(submission_id) -> bool:
    """received → processing, or take over a processing run whose worker died (stale).

    Conditional UPDATE: of two workers handed the same submission, exactly one wins.
    """
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.OBVERSE_PROCESSING_TIMEOUT_S)
    fresh = Submission.objects.filter(pk=submission_id, status=SubmissionStatus.RECEIVED)
    stale = Submission.objects.filter(
        pk=submission_id, status=SubmissionStatus.PROCESSING, processing_started_at__lt=stale_before
    )
    values = {
        "status": SubmissionStatus.PROCESSING,
        "step": ProcessingStep.FINDING_OBJECT,
        "processing_started_at": now,
        "attempts": F("attempts") + 1,
        "error": "",
    }
    return bool(fresh.update(**values) or stale.update(**values))


def _set_step(submission_id, step: str) -> None:
    # Progress is written outside any transaction so the status page sees it at once.
    Submission.objects.filter(pk=submission_id, status=SubmissionStatus.PROCESSING).update(step=step)


def submission_fail(*, submission_id, reason: str) -> None:
    """Mark a submission failed with a readable reason (kept, never deleted)."""
    Submission.objects.filter(pk=submission_id).exclude(status=SubmissionStatus.FAILED).update(
        status=SubmissionStatus.FAILED, error=reason[:2000], processed_at=timezone.now()
    )


def submission_process(*, submission_id, force: bool = False) -> bool:
    """Run the pipeline on every photo, search candidates, and move the submission to review.

    Idempotent: a submission already processed is left alone; a rerun after a crash overwrites the
    derived files and replaces the candidates in one transaction. Returns whether it did the work.
    Bad input fails the submission with the reason; other errors propagate so the queue retries,
    until the last attempt, which fails it.
    """
    from mlcore.imageio import ImageDecodeError
    from mlcore.pipeline import NoObjectFound

    if not _claim(submission_id) and not force:
        return False
    submission = Submission.objects.get(pk=submission_id)
    try:
        pipeline = get_pipeline()
        images = list(submission.images.order_by("position"))
        for image in images:
            _process_image(pipeline, image, on_step=lambda step: _set_step(submission_id, step))
        _pair_sides(images)
        _set_step(submission_id, ProcessingStep.SEARCHING)
        with transaction.atomic():
            _write_candidates(submission, images, pipeline)
            Submission.objects.filter(pk=submission_id, status=SubmissionStatus.PROCESSING).update(
                status=SubmissionStatus.AWAITING_REVIEW, step=ProcessingStep.READY, processed_at=timezone.now()
            )
    except (ImageDecodeError, NoObjectFound, PermanentProcessingError) as exc:
        submission_fail(submission_id=submission_id, reason=str(exc))
    except Exception as exc:
        logger.exception("processing submission %s failed", submission_id)
        if submission.attempts >= settings.OBVERSE_PROCESSING_MAX_ATTEMPTS:
            submission_fail(
                submission_id=submission_id, reason=f"Processing failed repeatedly ({exc.__class__.__name__})."
            )
        else:
            # Let the next attempt claim it at once rather than waiting for the stale timeout.
            Submission.objects.filter(pk=submission_id, status=SubmissionStatus.PROCESSING).update(
                status=SubmissionStatus.RECEIVED
            )
            raise
    return True


def _pair_sides(images: list[SubmissionImage]) -> None:
    """Two photos of one submission show the coin's two sides: decide their sides together.

    Each photo's own reading (or the side the user declared, certain) becomes a probability of
    obverse; ``mlcore.side.pair_obverse_first`` picks the likelier of the two assignments, and both
    photos get it with its probability (docs/ml-notes.md, "pairs decided together": held-out types,
    both photos right 0.72 read alone, 0.96 together). Left alone when nothing can be decided (two
    declared obverses, or two equal readings).
    """
    if len(images) != 2:
        return
    from mlcore.side import pair_obverse_first

    def obverse_probability(image: SubmissionImage) -> float:
        if image.declared_side != DeclaredSide.UNKNOWN:
            return 1.0 if image.declared_side == DeclaredSide.OBVERSE else 0.0
        confidence = float(image.side_confidence or 0.0)
        if image.side == Side.OBVERSE:
            return confidence
        return 1.0 - confidence if image.side == Side.REVERSE else 0.5

    q = pair_obverse_first(obverse_probability(images[0]), obverse_probability(images[1]))
    if q is None or q == 0.5:
        return
    first, second = (Side.OBVERSE, Side.REVERSE) if q > 0.5 else (Side.REVERSE, Side.OBVERSE)
    for image, side in zip(images, (first, second), strict=True):
        image.side, image.side_confidence = side, round(max(q, 1.0 - q), 4)
        image.save(update_fields=["side", "side_confidence"])


def _jpeg(image, quality: int = 90) -> ContentFile:
    from mlcore.imageio import encode_jpeg

    return ContentFile(encode_jpeg(image.convert("RGB"), quality=quality))


def _png(image) -> ContentFile:
    from mlcore.imageio import encode_png

    return ContentFile(encode_png(image))


def _process_image(pipeline, image: SubmissionImage, *, on_step: Callable[[str], None]) -> None:
    from mlcore.imageio import decode_image

    with private_uploads().open(image.upload_path, "rb") as fh:
        data = fh.read()
    decoded = decode_image(data, limits=decode_limits())
    known_side = image.declared_side if image.declared_side != DeclaredSide.UNKNOWN else None
    result = pipeline.process(decoded, known_side=known_side, on_step=on_step, choose=image.object_choice)
    # Derived files are overwritten on a rerun (same names), never duplicated.
    storage = image.original.storage
    for field, content, suffix in (
        ("original", _jpeg(_bounded(decoded)), "original.jpg"),
        ("cutout", _png(result.cutout), "cutout.png"),
        ("upright", _jpeg(result.upright), "upright.jpg"),
    ):
        name = f"submissions/{image.submission_id}/{image.position}-{suffix}"
        storage.delete(name)
        getattr(image, field).save(name.rsplit("/", 1)[1], content, save=False)
    image.crop_box = list(result.crop_box)
    image.detections = [
        _detection_json(d, decoded.size, chosen=i == result.chosen) for i, d in enumerate(result.detections)
    ]
    image.angle = float(result.angle)
    image.angle_confidence = float(result.angle_confidence)
    image.enhanced = bool(result.enhanced)
    image.side = result.side
    image.side_confidence = float(result.side_confidence)
    image.embedding = np.asarray(result.embedding, dtype=np.float32)
    turns = getattr(result, "turns", None)  # the rotation search's query, when the pipeline made it
    if turns is not None:
        image.turn_vectors = np.ascontiguousarray(turns.vectors, dtype=np.float32).tobytes()
        image.turns = {"angles": [float(a) for a in turns.angles], "bonus": [float(b) for b in turns.bonus]}
    else:
        image.turn_vectors, image.turns = None, {}  # turns of a previous attempt's cut-out no longer apply
    image.timings = {k: round(float(v), 1) for k, v in result.timings.items()}
    image.model_versions = dict(result.model_versions)
    image.save()


def _bounded(image, max_side: int = 1600):
    copy = image.copy()
    copy.thumbnail((max_side, max_side))
    return copy


def _detection_json(detection, size: tuple[int, int], *, chosen: bool) -> dict:
    """One object found in the photo, for the page that lets the user pick another (box in px and as fractions)."""
    box = detection["box"] if isinstance(detection, dict) else detection.box
    score = detection.get("score", 0.0) if isinstance(detection, dict) else getattr(detection, "score", 0.0)
    width, height = size
    return {
        "box": [int(v) for v in box],
        "fraction": [round(v / extent, 4) for v, extent in zip(box, (width, height, width, height), strict=True)],
        "score": round(float(score), 3),
        "chosen": chosen,
    }


# --- Sweeping stuck submissions ---------------------------------------------------------------


@dataclass
class SweepReport:
    """What one sweep did: the submissions it queued again and those it failed (ids)."""

    requeued: list
    failed: list


def _pending_submission_ids() -> set[str]:
    """Ids of submissions whose processing task is still in the ORM broker's queue.

    A task stays in the queue until a worker acknowledges it, so this includes tasks a worker holds
    (or held, if it died: the broker hands them out again after ``Q_CLUSTER["retry"]``). With another
    broker the table is empty and the sweep may queue a duplicate, which ``_claim`` makes harmless.
    """
    from django_q.models import OrmQ

    pending = set()
    for row in OrmQ.objects.only("payload"):
        task = row.task  # a payload signed with another key decodes to {"id": "*BadSignature"}
        if task.get("func") == "identification.tasks.process_submission" and task.get("args"):
            pending.add(str(task["args"][0]))
    return pending


def submission_sweep_stuck(*, now=None, limit: int = 200) -> SweepReport:
    """Queue again, or fail with a reason, submissions that the queue lost or whose worker died.

    Stuck means: ``received`` and untouched for OBVERSE_SWEEP_RECEIVED_AFTER_S with no task in the
    queue (the enqueue was lost, e.g. the database restarted between commit and enqueue), or
    ``processing`` for longer than OBVERSE_PROCESSING_TIMEOUT_S (the worker was killed). One with
    attempts left is set back to ``received`` and queued once this transaction commits, unless the
    queue still holds its task (its retry will come); one whose attempts are used up is failed.
    Race-safe: rows are locked with SKIP LOCKED and changed by conditional UPDATEs, and a requeued
    row's ``updated_at`` restarts its clock, so concurrent or repeated sweeps never queue it twice.
    """
    from django.db.models import Q

    now = now or timezone.now()
    received_before = now - timedelta(seconds=settings.OBVERSE_SWEEP_RECEIVED_AFTER_S)
    stale_before = now - timedelta(seconds=settings.OBVERSE_PROCESSING_TIMEOUT_S)
    max_attempts = settings.OBVERSE_PROCESSING_MAX_ATTEMPTS
    stuck = Q(status=SubmissionStatus.RECEIVED, updated_at__lt=received_before) | Q(
        status=SubmissionStatus.PROCESSING, processing_started_at__lt=stale_before
    )
    report = SweepReport(requeued=[], failed=[])
    with transaction.atomic():
        rows = list(
            Submission.objects.select_for_update(skip_locked=True)
            .filter(stuck)
            .order_by("created_at")
            .values_list("pk", "status", "attempts")[:limit]
        )
        pending = _pending_submission_ids() if rows else set()
        for pk, status, attempts in rows:
            unchanged = Submission.objects.filter(pk=pk, status=status)
            if attempts >= max_attempts:
                reason = (
                    f"Processing stopped {attempts} times without finishing (the worker was stopped or ran out "
                    "of time). Please submit the photos again, or smaller ones."
                )
                if unchanged.update(status=SubmissionStatus.FAILED, error=reason, processed_at=now, updated_at=now):
                    report.failed.append(pk)
            elif str(pk) not in pending and unchanged.update(
                status=SubmissionStatus.RECEIVED, step=ProcessingStep.RECEIVED, updated_at=now
            ):
                report.requeued.append(pk)
        requeued = list(report.requeued)
        transaction.on_commit(lambda: [submission_enqueue(submission_id=pk) for pk in requeued])
    if report.requeued or report.failed:
        logger.warning("sweep: requeued %s, failed %s stuck submissions", len(report.requeued), len(report.failed))
    return report


# --- Searching the catalogue ------------------------------------------------------------------


@dataclass
class ItemHit:
    """One candidate item with its evidence."""

    item_id: int
    score: float
    side_scores: dict[str, float]
    image_id: int | None
    query_position: int
    # Degrees counter-clockwise that turned the query to match its evidence image (rotation search);
    # None when the photo was searched at the estimator's angle only.
    angle: float | None = None
    # Added to ``score`` to rank: how far the item's metadata agrees with the vote of the photos'
    # nearest images (``mlcore.metadata.agreement_bonuses``); may be negative.
    agreement: float = 0.0


def embedding_version(pipeline) -> tuple[str, str]:
    """(model name, version) of the embeddings queries are compared with."""
    embedder = pipeline.embedder
    return embedder.name, embedder.version


def nearest_images(
    *, vector, side: str | None, model: tuple[str, str], filters: dict[str, str] | None = None, limit: int
) -> list[tuple[int, int, float]]:
    """[(image_id, item_id, cosine similarity)] nearest first, from pgvector's HNSW index.

    Filters (side, metadata) are applied inside the index scan; pgvector 0.8's iterative scan
    keeps reading the graph until enough rows pass them, so recall holds under selective filters.
    """
    queryset = ImageEmbedding.objects.filter(model_name=model[0], model_version=model[1], item__isnull=False)
    if side:
        queryset = queryset.filter(side=side)
    for kind, slug in (filters or {}).items():
        if kind in ALLOWED_FILTER_KINDS and slug:
            queryset = queryset.filter(item__concepts__kind=kind, item__concepts__slug=slug)
    queryset = queryset.annotate(distance=CosineDistance("vector", vector)).order_by("distance")
    with transaction.atomic(), _hnsw_settings():
        rows = list(queryset.values_list("image_id", "item_id", "distance")[:limit])
    return sorted(((image_id, item_id, 1.0 - float(d)) for image_id, item_id, d in rows), key=lambda r: -r[2])


class _hnsw_settings:
    """SET LOCAL the HNSW search parameters for the current transaction."""

    def __enter__(self):
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL hnsw.ef_search = %s", [settings.OBVERSE_HNSW_EF_SEARCH])
            cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        return self

    def __exit__(self, *exc):
        return False


def candidates_search(
    *, queries: Sequence[tuple], model: tuple[str, str], filters=None, k: int = CANDIDATES
) -> list[ItemHit]:
    """The k best items for one or two query photos [(position, side, vector[, angles[, bonus]])].

    Rotation search: a photo may come as (T, dim) vectors, its cut-out turned T ways, with ``angles``
    the correction angle of each turn and ``bonus`` a score added to that turn's hits (the
    orientation prior). Every turn is searched and each image scores by its best turn
    (``mlcore.retrieval.merge_turns``); that turn's angle is the candidate's alignment angle.
    Each photo's image hits are grouped into items (best image per item). With two photos of
    different sides, an item's score is the mean of its best score on each side (an item missing
    on a side gets that side's weakest score), so agreement of both sides wins.
    Items are ranked by that score plus their metadata ``agreement`` with each photo's nearest images
    (``mlcore.metadata.agreement_bonuses``, mean over photos; docs/ml-notes.md, seventh session).
    """
    from mlcore.metadata import agreement_bonuses
    from mlcore.retrieval import merge_turns

    merged_per_query = []
    for query in queries:
        vectors = np.asarray(query[2], dtype=np.float32)
        vectors = vectors.reshape(1, -1) if vectors.ndim == 1 else vectors
        angles = list(query[3]) if len(query) > 3 else [None] * len(vectors)
        bonus = list(query[4]) if len(query) > 4 else None
        per_turn = [
            nearest_images(vector=turned, side=query[1], model=model, filters=filters, limit=NEIGHBOUR_IMAGES)
            for turned in vectors
        ]
        merged_per_query.append((merge_turns(per_turn, bonus), angles))
    if not merged_per_query:
        return []
    labels = _item_labels(sorted({hit.item_id for merged, _ in merged_per_query for hit in merged}))
    per_query: list[dict[int, tuple[float, int, int, float | None]]] = []
    bonuses_per_query = []
    for query, (merged, angles) in zip(queries, merged_per_query, strict=True):
        best: dict[int, tuple[float, int, int, float | None]] = {}
        for image_id, item_id, score, turn in merged:
            if item_id not in best or score > best[item_id][0]:
                best[item_id] = (score, image_id, query[0], angles[turn])
        per_query.append(best)
        # How far each item's metadata agrees with this photo's nearest images (mlcore.metadata).
        bonuses_per_query.append(agreement_bonuses([(hit.item_id, labels[hit.item_id], hit.score) for hit in merged]))
    hits: list[ItemHit] = []
    items = set().union(*per_query)
    floors = [min((v[0] for v in best.values()), default=0.0) for best in per_query]
    for item_id in items:
        scores, side_scores, evidence = [], {}, None
        for query, best, floor in zip(queries, per_query, floors, strict=True):
            position, side = query[0], query[1]
            score, image_id, _, angle = best.get(item_id, (floor, None, position, None))
            scores.append(score)
            side_scores[side or f"photo{position + 1}"] = round(score, 4)
            if image_id is not None and (evidence is None or score > evidence[0]):
                evidence = (score, image_id, position, angle)
        hits.append(
            ItemHit(
                item_id,
                float(np.mean(scores)),
                side_scores,
                evidence[1] if evidence else None,
                evidence[2] if evidence else queries[0][0],
                angle=evidence[3] if evidence else None,
                agreement=float(np.mean([bonuses.get(item_id, 0.0) for bonuses in bonuses_per_query])),
            )
        )
    hits.sort(key=lambda h: -(h.score + h.agreement))
    return hits[:k]


def _item_labels(item_ids: Sequence[int]) -> dict[int, dict[str, str]]:
    labels: dict[int, dict[str, str]] = {i: {} for i in item_ids}
    through = Item.concepts.through.objects.filter(item_id__in=item_ids).select_related("concept")
    for row in through:
        labels[row.item_id].setdefault(row.concept.kind, row.concept.label)
    return labels


def _predict_metadata(pipeline, vector, side, model) -> dict:
    neighbours = nearest_images(vector=vector, side=side, model=model, limit=METADATA_NEIGHBOURS)
    labels = _item_labels([item_id for _, item_id, _ in neighbours])
    predictions = pipeline.predict_metadata([(labels[item_id], score) for _, item_id, score in neighbours])
    return {
        field: {"value": p.value, "confidence": round(float(p.confidence), 3)}
        for field, p in predictions.items()
        if p is not None and p.value
    }


def _search_side(image: SubmissionImage) -> str | None:
    """The side to search: the predicted one, or None (both sides) when the pipeline could not tell."""
    return image.side if image.side in (Side.OBVERSE, Side.REVERSE) else None


def _queries(images: list[SubmissionImage]) -> list[tuple]:
    """[(position, side, (T, dim) vectors, T correction angles, T score bonuses)] to search for each photo.

    Rotation search (the upright estimate is the largest loss of recall, docs/ml-notes.md): each photo
    is searched at the turns ``_image_turns`` stored; turn 0 is its embedding at the estimated angle.
    """
    queries = [(image.position, _search_side(image), *_image_turns(image)) for image in images]
    if len(images) == 2 and images[0].side == images[1].side:
        queries = [(query[0], None, *query[2:]) for query in queries]  # sides unsure: search both
    return queries


def _image_turns(image: SubmissionImage) -> tuple[np.ndarray, list[float], list[float]]:
    """The photo's turns: stored ones, else computed once from its cut-out (in the worker) and stored.

    A photo whose cut-out cannot be read, or a pipeline without ``query_turns``, is searched by its one
    embedding at the estimated angle.
    """
    if image.turn_vectors and image.turns.get("angles"):
        angles = [float(a) for a in image.turns["angles"]]
        vectors = np.frombuffer(bytes(image.turn_vectors), dtype=np.float32).reshape(len(angles), -1)
        return vectors, angles, [float(b) for b in image.turns["bonus"]]
    vector = np.asarray(image.embedding, dtype=np.float32)
    base = float(image.angle or 0.0)
    pipeline = get_pipeline()
    query_turns = getattr(pipeline, "query_turns", None)
    if query_turns is None or getattr(pipeline, "rotation_turns", 1) <= 1 or not image.cutout:
        return vector.reshape(1, -1), [base], [0.0]
    from PIL import Image

    try:
        with image.cutout.open("rb") as fh, Image.open(fh) as cutout:
            cutout.load()
            turns = query_turns(cutout, base, first=vector)
    except (OSError, ValueError) as exc:  # a missing or unreadable cut-out: search the one embedding
        logger.warning("Rotation search skipped for submission image %s: %s", image.pk, exc)
        return vector.reshape(1, -1), [base], [0.0]
    vectors = np.ascontiguousarray(turns.vectors, dtype=np.float32)
    image.turn_vectors = vectors.tobytes()
    image.turns = {"angles": [float(a) for a in turns.angles], "bonus": [float(b) for b in turns.bonus]}
    if image.pk:
        image.save(update_fields=["turn_vectors", "turns"])
    return vectors, image.turns["angles"], image.turns["bonus"]


def _write_candidates(submission: Submission, images: list[SubmissionImage], pipeline) -> None:
    model = embedding_version(pipeline)
    for image in images:
        image.metadata = _predict_metadata(pipeline, image.embedding, _search_side(image), model)
        image.save(update_fields=["metadata"])
    _replace_candidates(submission, images, model)


def _replace_candidates(submission: Submission, images: list[SubmissionImage], model: tuple[str, str]) -> None:
    """Search with the submission's filters and store the result; a rerun replaces, never duplicates."""
    hits = candidates_search(queries=_queries(images), model=model, filters=submission.filters)
    by_position = {image.position: image for image in images}
    submission.candidates.all().delete()
    Candidate.objects.bulk_create(
        Candidate(
            submission=submission,
            item_id=hit.item_id,
            rank=rank,
            score=round(hit.score, 4),
            agreement=round(hit.agreement, 4),
            side_scores=hit.side_scores,
            matched_image_id=hit.image_id,
            query_image=by_position[hit.query_position],
            # Catalogue photos are upright; turning one back by the angle that aligned the query with it
            # (rotation search), else by the estimator's angle, shows it as the query was photographed.
            rotation=-(hit.angle if hit.angle is not None else (by_position[hit.query_position].angle or 0.0)),
        )
        for rank, hit in enumerate(hits, start=1)
    )


def submission_recompute(*, submission_id, filters: dict[str, str]) -> Submission:
    """Narrow the candidates by metadata (e.g. only silver, only this ruler) and search again."""
    clean = {k: v for k, v in filters.items() if k in ALLOWED_FILTER_KINDS and v}
    with transaction.atomic():
        submission = Submission.objects.select_for_update().get(pk=submission_id)
        if submission.status in {SubmissionStatus.RECEIVED, SubmissionStatus.PROCESSING, SubmissionStatus.FAILED}:
            raise ValidationError({"filters": ["Candidates can be narrowed once processing has finished."]})
        submission.filters = clean
        submission.save(update_fields=["filters", "updated_at"])
        images = list(submission.images.order_by("position"))
        _replace_candidates(submission, images, embedding_version(get_pipeline()))
    return submission


def submission_none_match(*, submission_id) -> bool:
    """The sender says none of the candidates looks right: recorded once, for the reviewers.

    Reviewers see it beside the candidates (a hint towards "new item" or "not identifiable"); the
    candidates themselves are kept. Returns whether this call recorded it (a second click does not).
    """
    recorded = Submission.objects.filter(
        pk=submission_id, none_match_at__isnull=True, status__in=REVIEWABLE_STATUSES
    ).update(none_match_at=timezone.now(), updated_at=timezone.now())
    if not recorded and not Submission.objects.filter(pk=submission_id, none_match_at__isnull=False).exists():
        raise ValidationError({"none_match": ["Candidates can be judged once processing has finished."]})
    return bool(recorded)


def submission_choose_object(*, submission_id, position: int, index: int) -> None:
    """The user says which of the objects found in a photo is the coin: the submission is processed again.

    A photo of several coins is described by its likeliest object; the page shows every object found
    and lets the user pick another. Allowed until a volunteer has reviewed the submission (a review
    judged the other object's candidates). Race-safe: the conditional UPDATE back to ``received``
    wins once against a volunteer's claim or a second click; the worker does the rest, as for a new
    submission. Picking the object already described changes nothing.
    """
    with transaction.atomic():
        image = (
            SubmissionImage.objects.select_for_update().filter(submission_id=submission_id, position=position).first()
        )
        if image is None:
            raise ValidationError({"object": ["This submission has no such photo."]})
        if not 0 <= index < len(image.detections or []):
            raise ValidationError({"object": ["No such object was found in this photo."]})
        if image.detections[index].get("chosen"):
            return
        moved = (
            Submission.objects.filter(pk=submission_id, status=SubmissionStatus.AWAITING_REVIEW)
            .exclude(reviews__isnull=False)
            .update(
                status=SubmissionStatus.RECEIVED,
                step=ProcessingStep.RECEIVED,
                attempts=0,
                error="",
                processed_at=None,
                updated_at=timezone.now(),
            )
        )
        if not moved:
            raise ValidationError(
                {"object": ["The coin can be changed once processing has finished and before the first review."]}
            )
        image.object_choice = index
        image.save(update_fields=["object_choice"])
        transaction.on_commit(lambda: submission_enqueue(submission_id=submission_id))


# --- Indexing the catalogue -------------------------------------------------------------------


def catalogue_image_index(*, image_id: int, pipeline=None, recut: bool = False) -> bool:
    """Cut out and embed one catalogue image with the active embedding model (idempotent).

    Catalogue photos are upright and their side is known, so the pipeline skips those steps. The
    cut-out is stored with the image, and a later index for another embedding version (a training,
    ``manage.py reindex``) embeds that stored cut-out instead of finding the object again: the
    same vector, ~15× faster (docs/scaling.md). ``recut=True`` finds the object again (after a segmenter change);
    new pixels clear the stored cut-out anyway (``collection.services``).
    Returns False when the image has no file or cannot be processed (logged, not raised).
    """
    from mlcore.imageio import ImageDecodeError
    from mlcore.pipeline import NoObjectFound

    pipeline = pipeline or get_pipeline()
    model = embedding_version(pipeline)
    image = SpecimenImage.objects.select_related("specimen").filter(pk=image_id).first()
    if image is None or not image.image:
        return False
    started = time.monotonic()
    vector = None if recut else _stored_cutout_vector(pipeline, image)
    cutout = None
    if vector is None:
        try:
            with image.image.open("rb") as fh:
                result = pipeline.process(fh.read(), known_side=image.side, assume_upright=True)
        except (ImageDecodeError, NoObjectFound) as exc:
            logger.warning("catalogue image %s not indexed: %s", image_id, exc)
            return False
        vector, cutout = result.embedding, result.cutout
    with transaction.atomic():
        if cutout is not None:
            name = f"cutouts/{image.pk}.png"
            image.cutout.storage.delete(name)
            image.cutout.save(f"{image.pk}.png", _png(cutout), save=False)
            image.save(update_fields=["cutout"])
        ImageEmbedding.objects.update_or_create(
            image=image,
            model_name=model[0],
            model_version=model[1],
            defaults={"vector": vector, "side": image.side, "item_id": image.specimen.item_id},
        )
    logger.debug("indexed catalogue image %s in %.0f ms", image_id, (time.monotonic() - started) * 1000)
    return True


def _stored_cutout_vector(pipeline, image: SpecimenImage):
    """The embedding of the image's stored cut-out, or None when it has none or it cannot be read."""
    from PIL import Image

    if not image.cutout:
        return None
    try:
        with image.cutout.open("rb") as fh, Image.open(fh) as cutout:
            cutout.load()
            return pipeline.embed_cutout(cutout)
    except (OSError, ValueError) as exc:  # missing or damaged file: cut the photo out again
        logger.warning("catalogue image %s: stored cut-out unusable (%s); cutting it out again", image.pk, exc)
        return None


def catalogue_index_enqueue(*, image_ids: Sequence[int]) -> None:
    """Queue indexing of catalogue images after the current transaction commits (in batches)."""
    from django_q.tasks import async_task

    ids = list(image_ids)

    def enqueue():
        for start in range(0, len(ids), 50):
            async_task("identification.tasks.index_catalogue_images", ids[start : start + 50])

    transaction.on_commit(enqueue)


def catalogue_pending_images(*, model: tuple[str, str]):
    """Catalogue images without an embedding for this model version (what a re-index still has to do)."""
    done = ImageEmbedding.objects.filter(model_name=model[0], model_version=model[1]).values("image_id")
    return SpecimenImage.objects.exclude(image="").exclude(pk__in=done).order_by("pk")


def catalogue_prune_embeddings(*, keep: tuple[str, str]) -> int:
    """Delete embeddings of other model versions once the new version covers the catalogue."""
    deleted, _ = ImageEmbedding.objects.exclude(model_name=keep[0], model_version=keep[1]).delete()
    return deleted


# --- Training ---------------------------------------------------------------------------------


def models_train(
    *,
    seed: int = 0,
    limit: int | None = None,
    reindex: bool = True,
    progress=None,
    use_reviews: bool = True,
    exclude_record_ids: Sequence[str] = (),
):
    """Train every learned part from the catalogue into a new, active model version.

    With ``use_reviews`` the review workflow's training signal (curator-approved matches and the
    look-alikes ranked above them or rejected, ``review_selectors.training_signal``) is fed to
    training as positives and hard negatives; ``report.metrics["feedback"]`` says how many pairs
    were used. ``exclude_record_ids`` leaves specimens out (the benchmark's query coins).
    A new version may change the embedding (a learned projection), so by default the catalogue is
    re-embedded for it *before* it is activated: searches keep using the previous version's complete
    index meanwhile (with 300,000 coins a re-index takes hours). Images added during the re-index
    are caught up just after the switch, and the previous version's embeddings are pruned only once
    every image has one for the new version. ``reindex=False`` activates the new version at once.
    Returns mlcore's TrainingReport.
    """
    from identification.catalogue import catalogue_records
    from identification.pipeline import reset_pipeline
    from mlcore.train import train_all
    from mlcore.versions import version_activate

    records = catalogue_records(exclude_record_ids=set(exclude_record_ids))
    records = records[:limit] if limit else records
    if len(records) < 4:
        raise ValidationError(f"The catalogue has {len(records)} specimens with images; training needs more.")
    feedback = _review_feedback(records) if use_reviews else []
    models_dir = settings.OBVERSE_MODELS_DIR
    report = train_all(records, models_dir=models_dir, seed=seed, progress=progress, feedback=feedback, activate=False)
    if reindex:
        _index_pending(get_pipeline(version=report.version), progress=progress)
    version_activate(models_dir, report.version)
    report.activated = True
    reset_pipeline()
    if reindex:
        pipeline = get_pipeline()
        _index_pending(pipeline, progress=progress)  # images added while the new version was indexed
        model = embedding_version(pipeline)
        if not catalogue_pending_images(model=model).exists():
            catalogue_prune_embeddings(keep=model)
    return report


def _index_pending(pipeline, *, progress=None) -> None:
    """Embed every catalogue image that has no embedding for ``pipeline``'s embedding version."""
    model = embedding_version(pipeline)
    pending = list(catalogue_pending_images(model=model).values_list("pk", flat=True))
    for done, image_id in enumerate(pending, start=1):
        catalogue_image_index(image_id=image_id, pipeline=pipeline)
        if progress and (done % 100 == 0 or done == len(pending)):
            progress(f"indexed {done}/{len(pending)} catalogue images for {model[1]}")


REVIEW_NEGATIVE_SPECIMENS = 3  # catalogue specimens taken from each hard-negative item


def _review_feedback(records: list) -> list:
    """The review signal as mlcore FeedbackExamples, one per query photo of an approved identification.

    The query is the photo's upright cut-out as the pipeline stored it; positives are the training
    records of the accepted item, minus the specimen the approval made from this very submission
    (its image is that same photo); negatives are records of the hard-negative items. Photos
    without an upright file, or whose item has no other specimen with images, are left out.
    """
    from identification.catalogue import item_type_id
    from identification.models import Proposal, ProposalStatus
    from identification.review_selectors import training_signal
    from mlcore.train import FeedbackExample

    signal = training_signal()
    if not signal:
        return []
    by_type: dict[str, list] = {}
    for record in records:
        by_type.setdefault(record.type_id, []).append(record)
    item_ids = {p.positive_item_id for p in signal} | {i for p in signal for i in p.hard_negative_item_ids}
    type_of = {item.pk: item_type_id(item) for item in Item.objects.filter(pk__in=item_ids).only("pk", "uri")}
    photos = {
        image.pk: image for image in SubmissionImage.objects.filter(pk__in=[p.submission_image_id for p in signal])
    }
    own = {
        str(submission_id): record_id
        for submission_id, record_id in Proposal.objects.filter(
            submission_id__in={p.submission_id for p in signal}, status=ProposalStatus.APPROVED, specimen__isnull=False
        ).values_list("submission_id", "specimen__record_id")
    }
    examples = []
    for pair in signal:
        photo = photos.get(pair.submission_image_id)
        if photo is None or not photo.upright:
            continue
        made_here = own.get(str(pair.submission_id))
        positives = [r for r in by_type.get(type_of.get(pair.positive_item_id), []) if r.record_id != made_here]
        if not positives:
            continue
        negatives = [
            record
            for item_id in pair.hard_negative_item_ids
            for record in by_type.get(type_of.get(item_id), [])[:REVIEW_NEGATIVE_SPECIMENS]
        ]
        try:
            query = photo.upright.path
        except NotImplementedError:  # storage without local paths: read the file
            from PIL import Image

            with photo.upright.open("rb") as fh:
                query = Image.open(fh)
                query.load()
        examples.append(
            FeedbackExample(
                query=query,
                side=pair.side,
                positives=positives,
                negatives=negatives,
                label=f"submission-image:{pair.submission_image_id}",
                own_record_id=made_here or "",
            )
        )
    return examples


def models_train_enqueue() -> None:
    """Queue a training run (then re-index) for the worker, e.g. after loading a new collection."""
    from django_q.tasks import async_task

    transaction.on_commit(lambda: async_task("identification.tasks.train_models", task_name="train-models"))
