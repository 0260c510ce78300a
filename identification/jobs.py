"""Bulk work on the catalogue (indexing, training) on its own worker cluster, in chunks, with progress.

Visitors' photos are processed by the worker's default cluster; bulk work goes to the ``bulk``
cluster (``Q_CLUSTER["ALT_CLUSTERS"]``, started beside it by ``make run``, or on other machines),
so a photo never waits behind a re-index of the whole catalogue. Each task fits well inside its
cluster's time limit:

* indexing is cut into chunks of ``OBVERSE_INDEX_CHUNK`` images (``IndexChunk``), one task each; a
  chunk counts into its job exactly once (a conditional update), and images already embedded are
  not embedded again, so a chunk whose worker was killed is simply run again by the queue;
* a training is one task with a long limit (``OBVERSE_BULK_TIMEOUT_S``) that trains without
  re-indexing, then starts an indexing job for the new version that activates it once the whole
  catalogue has an embedding for it (search keeps the previous version's complete index meanwhile).

At most one training is queued or running (a database constraint): a request while one is queued
joins it; a request while one runs is remembered (``rerun``) and trained once more afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from collection.models import SpecimenImage
from identification import indexing, pipeline_cache
from identification.models import ACTIVE_JOB_STATUSES, BackgroundJob, IndexChunk, JobKind, JobStatus

logger = logging.getLogger(__name__)

BULK_CLUSTER = "bulk"


def bulk_enqueue(func: str, *args, task_name: str | None = None) -> None:
    """Queue a task on the bulk cluster (with ``OBVERSE_Q_SYNC`` it runs at once, as every task does)."""
    from django_q.tasks import async_task

    async_task(func, *args, cluster=BULK_CLUSTER, task_name=task_name)


# --- Indexing ---------------------------------------------------------------------------------------


def index_job_start(*, image_ids: Sequence[int], version: str = "", activate: bool = False) -> BackgroundJob | None:
    """An indexing job over these images in chunks, queued after the current transaction commits.

    ``version``: a trained version to embed for before it is active (default: the active one);
    ``activate``: activate it once every chunk has run (the end of a training). None when there is
    nothing to index and nothing to activate.
    """
    ids = list(dict.fromkeys(image_ids))
    if not ids and not activate:
        return None
    size = settings.OBVERSE_INDEX_CHUNK
    job = BackgroundJob.objects.create(kind=JobKind.INDEX, total=len(ids), model_version=version, activate=activate)
    chunks = IndexChunk.objects.bulk_create(
        IndexChunk(job=job, image_ids=ids[start : start + size]) for start in range(0, len(ids), size)
    )
    if not chunks:
        _index_job_finish(job.pk)
        return job

    def enqueue():
        for chunk in chunks:
            bulk_enqueue("identification.tasks.index_chunk", chunk.pk, task_name=f"index-{job.pk}-{chunk.pk}")

    transaction.on_commit(enqueue)
    return job


def index_chunk_run(*, chunk_id: int) -> int:
    """Index one chunk (idempotent); count it into its job once; finish the job with its last chunk."""
    chunk = IndexChunk.objects.select_related("job").filter(pk=chunk_id).first()
    if chunk is None or chunk.finished:
        return 0
    job = chunk.job
    BackgroundJob.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(
        status=JobStatus.RUNNING, started_at=timezone.now()
    )
    pipeline = pipeline_cache.get_pipeline(version=job.model_version or None)
    indexed, failed = indexing.catalogue_images_index(image_ids=chunk.image_ids, pipeline=pipeline)
    with transaction.atomic():
        # The job's row is locked so that two chunks finishing together see each other's flag.
        BackgroundJob.objects.select_for_update().filter(pk=job.pk).first()
        if IndexChunk.objects.filter(pk=chunk.pk, finished=False).update(finished=True):
            BackgroundJob.objects.filter(pk=job.pk).update(
                done=F("done") + indexed, failed=F("failed") + failed, updated_at=timezone.now()
            )
            if not IndexChunk.objects.filter(job_id=job.pk, finished=False).exists():
                transaction.on_commit(lambda: _index_job_finish(job.pk))
    return indexed


def _index_job_finish(job_id: int) -> None:
    """Mark the job done; after a training's index, activate the version and catch up with new images."""
    with transaction.atomic():
        job = BackgroundJob.objects.select_for_update().get(pk=job_id)
        if job.status not in ACTIVE_JOB_STATUSES:
            return
        job.status, job.finished_at = JobStatus.DONE, timezone.now()
        job.save(update_fields=["status", "finished_at", "updated_at"])
    if job.activate and job.model_version:
        _activate(job.model_version)


def _activate(version: str) -> None:
    """Switch search to ``version``, index what was added meanwhile, and prune the old index when complete."""
    from mlcore.versions import version_activate

    version_activate(settings.OBVERSE_MODELS_DIR, version)
    pipeline_cache.reset_pipeline()
    model = pipeline_cache.embedding_version(pipeline_cache.get_pipeline())
    pending = list(indexing.catalogue_pending_images(model=model).values_list("pk", flat=True))
    if pending:
        index_job_start(image_ids=pending)
    else:
        indexing.catalogue_prune_embeddings(keep=model)


def index_catalogue_pending() -> BackgroundJob | None:
    """Index every catalogue image that has no embedding for the active version (e.g. after an import)."""
    model = pipeline_cache.embedding_version(pipeline_cache.get_pipeline())
    ids = list(indexing.catalogue_pending_images(model=model).values_list("pk", flat=True))
    return index_job_start(image_ids=ids)


# --- Training ---------------------------------------------------------------------------------------


def training_request() -> BackgroundJob:
    """Queue a training, join the one queued, or have the one running train once more afterwards."""
    with transaction.atomic():
        active = BackgroundJob.objects.select_for_update().filter(kind=JobKind.TRAIN, status__in=ACTIVE_JOB_STATUSES)
        job = active.first()
        if job is not None:
            if job.status == JobStatus.RUNNING and not job.rerun:
                job.rerun = True
                job.save(update_fields=["rerun", "updated_at"])
            return job
        try:
            with transaction.atomic():
                job = BackgroundJob.objects.create(kind=JobKind.TRAIN)
        except IntegrityError:  # another request created it between our read and our insert: join it
            return BackgroundJob.objects.get(kind=JobKind.TRAIN, status__in=ACTIVE_JOB_STATUSES)
        transaction.on_commit(lambda: bulk_enqueue("identification.tasks.train_models", job.pk, task_name="train"))
    return job


def training_run(*, job_id: int) -> str:
    """Run a queued training job: train a new version, then index the catalogue for it (a job that activates it)."""
    from identification import training

    claimed = BackgroundJob.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(
        status=JobStatus.RUNNING, started_at=timezone.now()
    )
    job = BackgroundJob.objects.get(pk=job_id)
    if not claimed and job.status != JobStatus.RUNNING:
        return ""  # done, failed, or run by another attempt
    if not claimed:
        logger.warning("training job %s: its previous attempt died; training again", job_id)

    def progress(message: str) -> None:
        BackgroundJob.objects.filter(pk=job_id).update(detail=message[:300], updated_at=timezone.now())

    try:
        report = training.models_train(reindex=False, activate=False, progress=progress)
    except Exception as exc:
        BackgroundJob.objects.filter(pk=job_id).update(
            status=JobStatus.FAILED, detail=f"failed: {exc}"[:300], finished_at=timezone.now()
        )
        raise
    with transaction.atomic():
        job = BackgroundJob.objects.select_for_update().get(pk=job_id)
        job.status, job.finished_at, job.model_version = JobStatus.DONE, timezone.now(), report.version
        job.detail = f"trained {report.version}; indexing the catalogue for it"
        job.save()
        ids = SpecimenImage.objects.exclude(image="").values_list("pk", flat=True)
        index_job_start(image_ids=list(ids), version=report.version, activate=True)
        if job.rerun:
            transaction.on_commit(training_request)
    return report.version


def index_chunks_requeue_stale(*, now=None) -> list[int]:
    """Queue again the unfinished chunks of indexing jobs that have not moved for OBVERSE_BULK_STALE_S.

    With the database broker a task whose worker died comes back by itself (``Q_CLUSTER["retry"]``);
    Redis has no such receipt, so the sweep does it. A chunk run twice does nothing twice.
    """
    from datetime import timedelta

    now = now or timezone.now()
    stale = BackgroundJob.objects.filter(
        kind=JobKind.INDEX,
        status__in=ACTIVE_JOB_STATUSES,
        updated_at__lt=now - timedelta(seconds=settings.OBVERSE_BULK_STALE_S),
    )
    chunks = list(IndexChunk.objects.filter(job__in=stale, finished=False).values_list("pk", flat=True))
    if chunks:
        stale.update(updated_at=now)  # the clock restarts: the next sweep waits again
        for chunk in chunks:
            transaction.on_commit(lambda chunk=chunk: bulk_enqueue("identification.tasks.index_chunk", chunk))
    return chunks


def active_jobs() -> list[BackgroundJob]:
    """Bulk work queued or running, oldest first (the dashboard and /healthz show it)."""
    return list(BackgroundJob.objects.filter(status__in=ACTIVE_JOB_STATUSES).order_by("created_at"))
