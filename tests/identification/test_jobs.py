"""Bulk work in chunks on its own cluster: indexing counted once, a killed chunk rerun, one training at a time."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_q import tasks as q_tasks

from collection.models import ImageEmbedding
from identification import indexing, jobs
from identification.models import BackgroundJob, IndexChunk, JobKind, JobStatus
from tests.factories import unindexed_catalogue_images

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(monkeypatch):
    """Tasks queued for the worker: (function, args, cluster), not run."""
    calls = []
    monkeypatch.setattr(
        q_tasks, "async_task", lambda func, *args, **kwargs: calls.append((func, args, kwargs["cluster"]))
    )
    return calls


class TestIndexing:
    def test_a_job_is_cut_into_chunks_queued_on_the_bulk_cluster(
        self, settings, queued, django_capture_on_commit_callbacks
    ):
        settings.OBVERSE_INDEX_CHUNK = 2
        with django_capture_on_commit_callbacks(execute=True):
            job = jobs.index_job_start(image_ids=[5, 6, 7, 5, 8, 9])
        assert (job.kind, job.status, job.total) == (JobKind.INDEX, JobStatus.QUEUED, 5)  # duplicates once
        assert [chunk.image_ids for chunk in job.chunks.order_by("pk")] == [[5, 6], [7, 8], [9]]
        assert {(func, cluster) for func, _, cluster in queued} == {("identification.tasks.index_chunk", "bulk")}
        assert sorted(args[0] for _, args, _ in queued) == sorted(job.chunks.values_list("pk", flat=True))

    def test_every_chunk_counts_once_and_the_last_one_finishes_the_job(
        self, settings, fake_pipeline, queued, django_capture_on_commit_callbacks
    ):
        settings.OBVERSE_INDEX_CHUNK = 2
        ids = unindexed_catalogue_images(3)
        with django_capture_on_commit_callbacks(execute=True):
            job = jobs.index_job_start(image_ids=[*ids, 999999])  # one id is no image any more
        first, second = job.chunks.order_by("pk")
        with django_capture_on_commit_callbacks(execute=True):
            assert jobs.index_chunk_run(chunk_id=first.pk) == 2
        job.refresh_from_db()
        assert (job.status, job.done, job.failed) == (JobStatus.RUNNING, 2, 0)
        assert job.progress == 0.5 and job.seconds_left is not None
        with django_capture_on_commit_callbacks(execute=True):
            jobs.index_chunk_run(chunk_id=first.pk)  # delivered again: nothing counted or embedded twice
            jobs.index_chunk_run(chunk_id=second.pk)
        job.refresh_from_db()
        assert (job.status, job.done, job.failed, job.progress) == (JobStatus.DONE, 3, 1, 1.0)
        assert job.finished_at is not None and job.seconds_left is None
        assert ImageEmbedding.objects.filter(image_id__in=ids).count() == 3
        assert fake_pipeline.calls == 3  # each photo cut out once

    def test_a_chunk_whose_worker_died_is_rerun_without_indexing_anything_twice(
        self, settings, fake_pipeline, monkeypatch, django_capture_on_commit_callbacks, queued
    ):
        settings.OBVERSE_INDEX_CHUNK = 10
        ids = unindexed_catalogue_images(4)
        with django_capture_on_commit_callbacks(execute=True):
            job = jobs.index_job_start(image_ids=ids)
        (chunk,) = job.chunks.all()
        real = indexing.catalogue_images_index

        def dies_half_way(*, image_ids, pipeline):
            real(image_ids=image_ids[:2], pipeline=pipeline)  # two images done and stored
            raise SystemExit("worker killed")

        monkeypatch.setattr(indexing, "catalogue_images_index", dies_half_way)
        with pytest.raises(SystemExit):
            jobs.index_chunk_run(chunk_id=chunk.pk)
        monkeypatch.setattr(indexing, "catalogue_images_index", real)
        assert not IndexChunk.objects.get(pk=chunk.pk).finished
        with django_capture_on_commit_callbacks(execute=True):
            assert jobs.index_chunk_run(chunk_id=chunk.pk) == 4  # the queue delivers it again
        job.refresh_from_db()
        assert (job.status, job.done) == (JobStatus.DONE, 4)
        assert ImageEmbedding.objects.filter(image_id__in=ids).count() == 4
        assert fake_pipeline.calls == 4  # the two done before the kill were not cut out again

    def test_the_sweep_queues_again_the_chunks_of_a_job_that_stopped_moving(
        self, settings, queued, django_capture_on_commit_callbacks
    ):
        from datetime import timedelta

        settings.OBVERSE_INDEX_CHUNK = 2
        with django_capture_on_commit_callbacks(execute=True):
            job = jobs.index_job_start(image_ids=[1, 2, 3])
        first = job.chunks.order_by("pk").first()
        IndexChunk.objects.filter(pk=first.pk).update(finished=True)
        queued.clear()
        assert jobs.index_chunks_requeue_stale() == []  # it moved just now
        later = timezone.now() + timedelta(seconds=settings.OBVERSE_BULK_STALE_S + 1)
        with django_capture_on_commit_callbacks(execute=True):
            assert jobs.index_chunks_requeue_stale(now=later) == [job.chunks.order_by("pk").last().pk]
        assert [(func, cluster) for func, _, cluster in queued] == [("identification.tasks.index_chunk", "bulk")]
        assert jobs.index_chunks_requeue_stale(now=later) == []  # its clock restarted

    def test_a_trainings_index_activates_its_version_when_complete(
        self, settings, fake_pipeline, monkeypatch, django_capture_on_commit_callbacks, queued
    ):
        from mlcore import versions

        activated = []
        monkeypatch.setattr(versions, "version_activate", lambda models_dir, version: activated.append(version))
        ids = unindexed_catalogue_images(2)
        with django_capture_on_commit_callbacks(execute=True):
            job = jobs.index_job_start(image_ids=ids, version="v2", activate=True)
        assert fake_pipeline.versions_asked == [] and activated == []
        with django_capture_on_commit_callbacks(execute=True):
            jobs.index_chunk_run(chunk_id=job.chunks.get().pk)
        assert "v2" in fake_pipeline.versions_asked and activated == ["v2"]
        assert BackgroundJob.objects.get(pk=job.pk).status == JobStatus.DONE


class TestTraining:
    def test_one_training_at_a_time_and_a_request_while_it_runs_trains_once_more(
        self, queued, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            first = jobs.training_request()
            assert jobs.training_request() == first  # queued: joined, not queued twice
        assert [func for func, _, _ in queued] == ["identification.tasks.train_models"]
        BackgroundJob.objects.filter(pk=first.pk).update(status=JobStatus.RUNNING, started_at=timezone.now())
        with django_capture_on_commit_callbacks(execute=True):
            assert jobs.training_request() == first
        assert BackgroundJob.objects.get(pk=first.pk).rerun and len(queued) == 1
        with pytest.raises(IntegrityError), transaction.atomic():
            BackgroundJob.objects.create(kind=JobKind.TRAIN)  # the database refuses a second active one

    def test_a_training_trains_then_indexes_for_its_version_and_runs_again_if_asked(
        self, fake_pipeline, monkeypatch, queued, django_capture_on_commit_callbacks
    ):
        from identification import training

        class Report:
            version = "v9"

        asked = []
        monkeypatch.setattr(training, "models_train", lambda **kwargs: asked.append(kwargs) or Report())
        unindexed_catalogue_images(2)
        with django_capture_on_commit_callbacks(execute=True):
            job = jobs.training_request()
        BackgroundJob.objects.filter(pk=job.pk).update(rerun=True)
        with django_capture_on_commit_callbacks(execute=True):
            assert jobs.training_run(job_id=job.pk) == "v9"
        assert asked[0]["reindex"] is False and asked[0]["activate"] is False
        job.refresh_from_db()
        assert (job.status, job.model_version) == (JobStatus.DONE, "v9")
        index = BackgroundJob.objects.get(kind=JobKind.INDEX)
        assert (index.model_version, index.activate, index.total) == ("v9", True, 2)
        again = BackgroundJob.objects.get(kind=JobKind.TRAIN, status=JobStatus.QUEUED)  # the rerun asked for
        assert again.pk != job.pk
        assert jobs.training_run(job_id=job.pk) == ""  # a finished job delivered again does nothing

    def test_a_failed_training_says_why_and_frees_the_slot(
        self, monkeypatch, queued, django_capture_on_commit_callbacks
    ):
        from identification import training

        monkeypatch.setattr(training, "models_train", lambda **kwargs: (_ for _ in ()).throw(ValueError("too few")))
        with django_capture_on_commit_callbacks(execute=True):
            job = jobs.training_request()
        with pytest.raises(ValueError):
            jobs.training_run(job_id=job.pk)
        job.refresh_from_db()
        assert job.status == JobStatus.FAILED and "too few" in job.detail
        assert jobs.training_request().pk != job.pk and jobs.active_jobs()[0].kind == JobKind.TRAIN
