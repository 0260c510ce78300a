"""Submission services: accept a submission, process it in the background, narrow its candidates.

Every write goes through a function here; views, API and tasks stay thin. State changes are
race-safe (conditional UPDATEs), tasks take ids and are enqueued after the transaction commits,
and a rerun after a crash finishes the job without duplicating anything. What is checked at the
door is ``identification.uploads``; the catalogue search ``identification.search``.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from collection.models import CANDIDATE_FILTER_KINDS, Side
from identification import pipeline_cache, search, uploads
from identification.models import DeclaredSide, ProcessingStep, Submission, SubmissionImage, SubmissionStatus
from identification.pipeline_cache import embedding_version
from mlcore.imageio import decode_image, encode_jpeg, encode_png

logger = logging.getLogger(__name__)


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
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return cls("The server has no room to store photos right now. Please try again later.", status=507)
        return cls("The server cannot store photos right now. Please try again later.", status=503)


# --- Accepting a submission -------------------------------------------------------------------


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
    errors = uploads.submission_validate(
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
    storage = uploads.private_uploads()
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
            # a stored submission; it is logged, and the sweep (``identification.sweep``) queues it later.
            transaction.on_commit(lambda: submission_enqueue(submission_id=submission.pk), robust=True)
    except OSError as exc:  # disk full or folder unwritable: no rows (rolled back), no files
        uploads.uploads_discard(storage, submission.pk)
        logger.error("cannot store uploads in %s: %s", storage.location, exc)
        raise StorageUnavailable.from_os_error(exc) from exc
    except Exception:
        uploads.uploads_discard(storage, submission.pk)  # no orphan files when the rows were rolled back
        raise
    return submission


def submission_enqueue(*, submission_id) -> None:
    """Queue the background processing of a submission (call after commit)."""
    from django_q.tasks import async_task

    async_task("identification.tasks.process_submission", str(submission_id), task_name=f"submission-{submission_id}")


# --- Processing (the worker) -----------------------------------------------------------------


def _start_processing(submission_id) -> bool:
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

    if not _start_processing(submission_id) and not force:
        return False
    submission = Submission.objects.get(pk=submission_id)
    try:
        pipeline = pipeline_cache.get_pipeline()
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
    except (ImageDecodeError, NoObjectFound) as exc:  # the input itself is bad: retrying cannot help
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
    photos get it with its probability: a pair read together is right far more often than each photo
    read alone (docs/ml-notes.md, "Pairs decided together"). Left alone when nothing can be decided
    (two declared obverses, or two equal readings).
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


def _process_image(pipeline, image: SubmissionImage, *, on_step: Callable[[str], None]) -> None:
    with uploads.private_uploads().open(image.upload_path, "rb") as fh:
        data = fh.read()
    decoded = decode_image(data, limits=uploads.decode_limits())
    known_side = image.declared_side if image.declared_side != DeclaredSide.UNKNOWN else None
    result = pipeline.process(decoded, known_side=known_side, on_step=on_step, choose=image.object_choice)
    # Derived files are overwritten on a rerun (same names), never duplicated.
    storage = image.original.storage
    for field, content, suffix in (
        ("original", _jpeg(_bounded(decoded)), "original.jpg"),
        ("cutout", ContentFile(encode_png(result.cutout)), "cutout.png"),
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
    turns = result.turns  # the rotation search's query, when the pipeline made it
    if turns is not None:
        image.turn_vectors = np.ascontiguousarray(turns.vectors, dtype=np.float32).tobytes()
        image.turns = {"angles": [float(a) for a in turns.angles], "bonus": [float(b) for b in turns.bonus]}
    else:
        image.turn_vectors, image.turns = None, {}  # turns of a previous attempt's cut-out no longer apply
    image.timings = {k: round(float(v), 1) for k, v in result.timings.items()}
    image.model_versions = dict(result.model_versions)
    image.save()


def _jpeg(image, quality: int = 90) -> ContentFile:
    return ContentFile(encode_jpeg(image.convert("RGB"), quality=quality))


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


def _write_candidates(submission: Submission, images: list[SubmissionImage], pipeline) -> None:
    """Each photo's predicted metadata, then the candidates, searched in the index of ``pipeline``'s version."""
    model = embedding_version(pipeline)
    for image in images:
        image.metadata = search.metadata_predict(
            pipeline, vector=image.embedding, side=search.search_side(image), model=model
        )
        image.save(update_fields=["metadata"])
    search.candidates_store(submission, images, model)


# --- The sender's actions on the result page ---------------------------------------------------


def submission_recompute(*, submission_id, filters: dict[str, str]) -> Submission:
    """Narrow the candidates by metadata (e.g. only silver, only this ruler) and search again.

    Runs in a web request and never loads a model: the photos are searched with the vectors the
    worker stored, in the index of the model version that made them. When that version is no
    longer indexed (a retraining replaced it), its vectors cannot be compared with the catalogue's:
    the submission goes back to the worker, which describes the photos again and searches with these
    filters. That is allowed while it awaits review; later it is refused with the reason.
    """
    clean = {kind: slug for kind, slug in filters.items() if kind in CANDIDATE_FILTER_KINDS and slug}
    with transaction.atomic():
        submission = Submission.objects.select_for_update().get(pk=submission_id)
        if not submission.can_narrow_candidates:
            raise ValidationError({"filters": ["Candidates can be narrowed once processing has finished."]})
        submission.filters = clean
        submission.save(update_fields=["filters", "updated_at"])
        images = list(submission.images.order_by("position"))
        model = search.embedded_with(images)
        if search.index_has(model):
            search.candidates_store(submission, images, model)
        else:
            _process_again(submission)
    return submission


def _process_again(submission: Submission) -> None:
    """Send a submission back to the worker (awaiting review only), as for a new one."""
    moved = Submission.objects.filter(pk=submission.pk, status=SubmissionStatus.AWAITING_REVIEW).update(
        status=SubmissionStatus.RECEIVED,
        step=ProcessingStep.RECEIVED,
        attempts=0,
        error="",
        processed_at=None,
        updated_at=timezone.now(),
    )
    if not moved:
        raise ValidationError(
            {
                "filters": [
                    "The catalogue has been indexed again since these photos were described; they can be "
                    "searched again only until a volunteer starts reviewing them."
                ]
            }
        )
    submission.status, submission.step = SubmissionStatus.RECEIVED, ProcessingStep.RECEIVED
    transaction.on_commit(lambda: submission_enqueue(submission_id=submission.pk))


def submission_none_match(*, submission_id) -> bool:
    """The sender says none of the candidates looks right: recorded once, for the reviewers.

    Reviewers see it beside the candidates (a hint towards "new item" or "not identifiable"); the
    candidates themselves are kept. Returns whether this call recorded it (a second click does not).
    """
    recorded = Submission.objects.filter(
        pk=submission_id, none_match_at__isnull=True, status__in=Submission.OPEN_STATUSES
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
