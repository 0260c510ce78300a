"""Identification: a photo submission, its processed images and the candidate catalogue items.

Review, consensus and approval (volunteers and curators) build on these rows, in the ``review`` app.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.urls import reverse
from pgvector.django import VectorField

from collection.models import EMBEDDING_DIMENSIONS, Item, SpecimenImage


class SubmissionStatus(models.TextChoices):
    RECEIVED = "received", "Received"
    PROCESSING = "processing", "Processing"
    AWAITING_REVIEW = "awaiting_review", "Awaiting review"
    IN_REVIEW = "in_review", "In review"
    PROPOSED = "proposed", "Proposed to curators"
    RESOLVED = "resolved", "Resolved"
    NEEDS_EXPERT = "needs_expert", "Needs an expert"
    FAILED = "failed", "Failed"


class ProcessingStep(models.TextChoices):
    """What the worker is doing now, shown on the status page in this order."""

    RECEIVED = "received", "Received"
    FINDING_OBJECT = "finding_object", "Finding the object"
    REMOVING_BACKGROUND = "removing_background", "Removing background"
    TURNING_UPRIGHT = "turning_upright", "Turning upright"
    ENHANCING = "enhancing", "Enhancing"
    CLASSIFYING = "classifying", "Classifying"
    EMBEDDING = "embedding", "Describing the image"
    SEARCHING = "searching", "Searching the catalogue"
    READY = "ready", "Ready"


class DeclaredSide(models.TextChoices):
    OBVERSE = "obverse", "Obverse"
    REVERSE = "reverse", "Reverse"
    UNKNOWN = "unknown", "Not sure"


class Submission(models.Model):
    """A request to identify one specimen from one or two photos, by a visitor, a user or an API client.

    The id is a UUID so status and result URLs cannot be guessed. ``status`` is the workflow state;
    ``step`` the pipeline's progress while processing. Requester contact details are private.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    status = models.CharField(
        max_length=20, choices=SubmissionStatus.choices, default=SubmissionStatus.RECEIVED, db_index=True
    )
    step = models.CharField(max_length=30, choices=ProcessingStep.choices, default=ProcessingStep.RECEIVED)
    error = models.TextField(blank=True, help_text="Readable reason when processing failed.")
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="submissions"
    )
    requester_name = models.CharField(max_length=200, blank=True)
    requester_email = models.EmailField(blank=True)
    notes = models.TextField(blank=True)
    filters = models.JSONField(default=dict, blank=True, help_text="Metadata filters the candidates were narrowed by.")
    none_match_at = models.DateTimeField(
        null=True, blank=True, help_text="When the sender said none of the candidates looks right (shown to reviewers)."
    )
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    processing_started_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    # Status groups, the one place they are spelled out (properties below; querysets use the sets).
    PROCESSING_STATUSES = frozenset({SubmissionStatus.RECEIVED, SubmissionStatus.PROCESSING})
    # Candidates shown to the sender and still being judged by volunteers or curators.
    OPEN_STATUSES = frozenset(
        {
            SubmissionStatus.AWAITING_REVIEW,
            SubmissionStatus.IN_REVIEW,
            SubmissionStatus.NEEDS_EXPERT,
            SubmissionStatus.PROPOSED,
        }
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Submission {str(self.id)[:8]} ({self.get_status_display()})"

    def get_absolute_url(self) -> str:
        return reverse("identification:submission_detail", kwargs={"pk": self.pk})

    @property
    def is_finished_processing(self) -> bool:
        """The worker is done with it (for good, or until the sender picks another object)."""
        return self.status not in self.PROCESSING_STATUSES

    @property
    def can_narrow_candidates(self) -> bool:
        """Processing finished with candidates, which the sender may narrow and search again."""
        return self.is_finished_processing and self.status != SubmissionStatus.FAILED

    @property
    def is_open(self) -> bool:
        """Its candidates are still being judged: the sender may tell the reviewers none looks right."""
        return self.status in self.OPEN_STATUSES


def _upload_to(instance: SubmissionImage, filename: str) -> str:
    return f"submissions/{instance.submission_id}/{filename}"


class SubmissionImage(models.Model):
    """One uploaded photo and what the pipeline made of it (cut-out, angle, side, metadata, embedding).

    ``upload`` is the file as received, kept outside public media; ``original`` is its re-encoded copy
    without EXIF/GPS, which is what pages show.
    """

    submission = models.ForeignKey(Submission, on_delete=models.CASCADE, related_name="images")
    position = models.PositiveSmallIntegerField(default=0)
    declared_side = models.CharField(max_length=10, choices=DeclaredSide.choices, default=DeclaredSide.UNKNOWN)
    upload_name = models.CharField(max_length=255, blank=True)
    upload_path = models.CharField(max_length=300, blank=True, help_text="Raw upload in private storage.")
    original = models.ImageField(upload_to=_upload_to, blank=True, max_length=300)
    cutout = models.ImageField(upload_to=_upload_to, blank=True, max_length=300)
    upright = models.ImageField(upload_to=_upload_to, blank=True, max_length=300)
    crop_box = models.JSONField(null=True, blank=True)
    # Every object found in the photo: [{"box": [x0, y0, x1, y1] px, "fraction": the box / the photo's
    # size, "score", "chosen": whether it is the one described}], best first.
    detections = models.JSONField(default=list, blank=True)
    object_choice = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Which object found is the coin, as the user picked it (else the likeliest)."
    )
    angle = models.FloatField(null=True, blank=True, help_text="Degrees turned counter-clockwise to make it upright.")
    angle_confidence = models.FloatField(null=True, blank=True)
    enhanced = models.BooleanField(default=False)
    side = models.CharField(max_length=10, blank=True)
    side_confidence = models.FloatField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True, help_text="{field: {value, confidence}} predictions.")
    embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS, null=True, blank=True)
    # Rotation search: the cut-out embedded at several turns (float32 rows), with each turn's correction
    # angle and score bonus. Computed once by the worker, so a narrowed search never runs a model.
    turn_vectors = models.BinaryField(null=True, blank=True, editable=False)
    turns = models.JSONField(default=dict, blank=True, help_text='{"angles": [...], "bonus": [...]}')
    timings = models.JSONField(default=dict, blank=True)
    model_versions = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["submission", "position"]
        constraints = [
            models.UniqueConstraint(fields=["submission", "position"], name="submission_image_unique_position"),
        ]

    def __str__(self) -> str:
        return f"{self.submission_id} #{self.position}"

    @property
    def embedding_model(self) -> tuple[str, str] | None:
        """(name, version) of the model that made ``embedding``, as the worker recorded it; None if unknown.

        A search compares the photo with the catalogue's embeddings of this same version, whatever
        version is active now (``mlcore.pipeline.Pipeline.model_versions`` writes "name@version").
        """
        name, at, version = (self.model_versions or {}).get("embedding", "").partition("@")
        return (name, version) if at and name and version else None


class Candidate(models.Model):
    """A catalogue item proposed for a submission, with its evidence (score per side, matched image, rotation)."""

    submission = models.ForeignKey(Submission, on_delete=models.CASCADE, related_name="candidates")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="+")
    rank = models.PositiveSmallIntegerField()
    score = models.FloatField(help_text="Cosine similarity (mean over the query's photos).")
    agreement = models.FloatField(
        default=0.0,
        help_text="Added to the score to rank: agreement of the item's metadata with the nearest images' vote.",
    )
    side_scores = models.JSONField(default=dict, blank=True)
    matched_image = models.ForeignKey(SpecimenImage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    query_image = models.ForeignKey(SubmissionImage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    rotation = models.FloatField(
        default=0.0, help_text="Degrees to turn the matched catalogue image to the query's orientation."
    )

    class Meta:
        ordering = ["submission", "rank"]
        constraints = [
            models.UniqueConstraint(fields=["submission", "rank"], name="candidate_unique_rank"),
            models.UniqueConstraint(fields=["submission", "item"], name="candidate_unique_item"),
        ]

    def __str__(self) -> str:
        return f"{self.submission_id} #{self.rank}: {self.item_id}"


class JobKind(models.TextChoices):
    INDEX = "index", "Indexing catalogue images"
    TRAIN = "train", "Training the models"


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


ACTIVE_JOB_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)


class BackgroundJob(models.Model):
    """Bulk work on the catalogue (indexing, training) that visitors' photos never wait behind.

    It runs on the worker's separate bulk cluster (``identification.jobs``), in chunks that each
    fit well inside their time limit; ``done`` of ``total`` and the rate so far give the progress
    and an estimate of the time left, shown on the review dashboard and by /healthz. At most one
    training is queued or running at a time (a database constraint); a request that arrives while
    one runs sets ``rerun``, so the catalogue's latest state is trained once more afterwards.
    """

    kind = models.CharField(max_length=10, choices=JobKind.choices)
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.QUEUED)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0, help_text="Items that could not be processed (logged).")
    detail = models.CharField(max_length=300, blank=True, help_text="What it is doing now, or why it failed.")
    model_version = models.CharField(max_length=120, blank=True)
    rerun = models.BooleanField(default=False, help_text="Asked for again while running: run once more after.")
    activate = models.BooleanField(default=False, help_text="Indexing: activate ``model_version`` when done.")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind"],
                condition=models.Q(kind="train", status__in=["queued", "running"]),
                name="one_active_training",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.status}, {self.done}/{self.total})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_JOB_STATUSES

    @property
    def progress(self) -> float | None:
        """Share done (0..1), or None when the size of the work is not known."""
        return min(1.0, (self.done + self.failed) / self.total) if self.total else None

    @property
    def seconds_left(self) -> float | None:
        """At the rate so far; None before anything is done."""
        from django.utils import timezone

        finished = self.done + self.failed
        if self.status != JobStatus.RUNNING or not self.started_at or not finished or not self.total:
            return None
        elapsed = (timezone.now() - self.started_at).total_seconds()
        return max(0.0, elapsed / finished * (self.total - finished))

    @property
    def minutes_left(self) -> int | None:
        """``seconds_left`` in whole minutes, rounded up (what a page shows)."""
        seconds = self.seconds_left
        return None if seconds is None else max(1, -(-int(seconds) // 60))


class IndexChunk(models.Model):
    """A few hundred catalogue images of an indexing job: one task, counted into the job exactly once."""

    job = models.ForeignKey(BackgroundJob, on_delete=models.CASCADE, related_name="chunks")
    image_ids = models.JSONField(default=list)
    finished = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"chunk {self.pk} of job {self.job_id} ({len(self.image_ids)} images)"
