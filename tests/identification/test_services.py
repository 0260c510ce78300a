"""identification.services: accepting, processing, narrowing and the sender's actions, with a fake pipeline."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from collection.models import ImageEmbedding, Side
from identification import pipeline_cache, search, services, uploads
from identification.models import Candidate, Submission, SubmissionStatus
from tests.factories import catalogue_image, make_concept, make_item, pattern_png, photo_upload, two_coins_png
from tests.fakes import FakePipeline

pytestmark = pytest.mark.django_db


def create(**kwargs) -> Submission:
    defaults = {"files": [photo_upload()], "requester_name": "Ada", "requester_email": "ada@example.org"}
    return services.submission_create(**{**defaults, **kwargs})


class TestSubmissionCreate:
    def test_it_stores_the_submission_and_its_raw_photos(self, settings):
        submission = create(sides=["reverse"], notes="  found in a drawer ")
        image = submission.images.get()
        assert submission.status == SubmissionStatus.RECEIVED
        assert image.declared_side == "reverse"
        assert submission.notes == "found in a drawer"
        assert uploads.private_uploads().exists(image.upload_path)

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"files": []}, "images"),
            ({"files": [photo_upload(), photo_upload(), photo_upload()]}, "images"),
            ({"files": [photo_upload(b"")]}, "images"),
            ({"sides": ["obverse", "reverse"]}, "sides"),
            ({"sides": ["edge"]}, "sides"),
            ({"requester_name": ""}, "requester_name"),
            ({"requester_email": ""}, "requester_email"),
        ],
    )
    def test_it_rejects_bad_input_naming_the_field(self, kwargs, field):
        with pytest.raises(ValidationError) as excinfo:
            create(**kwargs)
        assert field in excinfo.value.message_dict
        assert Submission.objects.count() == 0

    def test_it_rejects_files_over_the_size_limit(self, settings):
        settings.OBVERSE_MAX_UPLOAD_BYTES = 100
        with pytest.raises(ValidationError) as excinfo:
            create(files=[photo_upload(b"x" * 101)])
        assert "larger than" in excinfo.value.message_dict["images"][0]

    def test_a_logged_in_user_needs_no_contact_details(self, volunteer):
        submission = create(requester_name="", requester_email="", user=volunteer)
        assert submission.submitted_by == volunteer

    def test_anonymous_submissions_are_rate_limited_per_ip_and_email(self, settings):
        settings.OBVERSE_ANON_SUBMISSIONS_PER_HOUR = 2
        create(client_ip="10.0.0.1", requester_email="a@example.org")
        create(client_ip="10.0.0.1", requester_email="b@example.org")
        with pytest.raises(ValidationError):
            create(client_ip="10.0.0.1", requester_email="c@example.org")
        create(client_ip="10.0.0.2", requester_email="d@example.org")
        create(client_ip="10.0.0.3", requester_email="d@example.org")
        with pytest.raises(ValidationError):
            create(client_ip="10.0.0.4", requester_email="D@example.org")

    def test_processing_is_enqueued_only_after_commit(self, fake_pipeline, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            submission = create()
        assert len(callbacks) == 1
        assert fake_pipeline.calls == 0
        callbacks[0]()  # the queue runs tasks inline in tests (Q_CLUSTER sync)
        submission.refresh_from_db()
        assert submission.status == SubmissionStatus.AWAITING_REVIEW


class TestSubmissionProcess:
    def test_the_worker_decodes_with_the_upload_limit_the_door_accepted(self, fake_pipeline, settings, monkeypatch):
        """A site that allows 30 MB photos must not have the worker refuse them at mlcore's default 25 MB."""
        import mlcore.imageio

        settings.OBVERSE_MAX_UPLOAD_BYTES = 30 * 2**20
        seen = []
        decode = mlcore.imageio.decode_image
        monkeypatch.setattr(
            services, "decode_image", lambda data, limits: seen.append(limits) or decode(data, limits=limits)
        )
        submission = create()
        services.submission_process(submission_id=submission.pk)
        assert [limits.max_bytes for limits in seen] == [30 * 2**20]
        assert uploads.decode_limits().max_bytes == 30 * 2**20

    def test_it_finds_the_matching_item_first_and_records_the_evidence(self, fake_pipeline):
        silver = make_concept("material", "Silver")
        items = [make_item(concepts=[silver] if i == 3 else []) for i in range(6)]
        matched = {item.pk: catalogue_image(item, seed=100 + i, pipeline=fake_pipeline) for i, item in enumerate(items)}
        submission = create(files=[photo_upload(pattern_png(103))])
        assert services.submission_process(submission_id=submission.pk)
        submission.refresh_from_db()
        assert submission.status == SubmissionStatus.AWAITING_REVIEW
        assert submission.step == "ready"
        first = submission.candidates.order_by("rank").first()
        assert first.item_id == items[3].pk
        assert first.matched_image_id == matched[items[3].pk].pk
        assert first.score == pytest.approx(1.0, abs=1e-3)
        assert first.rotation == pytest.approx(-30.0)
        image = submission.images.get()
        assert image.side == "obverse" and image.metadata["material"]["value"] == "Silver"
        assert image.original and image.cutout and image.upright

    def test_several_specimens_of_one_item_do_not_crowd_out_other_items(self, fake_pipeline):
        crowded = make_item()
        for _ in range(10):
            catalogue_image(crowded, seed=200, pipeline=fake_pipeline)  # ten near-identical specimens
        others = [make_item() for _ in range(9)]
        for i, item in enumerate(others):
            catalogue_image(item, seed=300 + i, pipeline=fake_pipeline)
        submission = create(files=[photo_upload(pattern_png(200))])
        services.submission_process(submission_id=submission.pk)
        item_ids = list(submission.candidates.values_list("item_id", flat=True))
        assert len(item_ids) == 8 == len(set(item_ids))
        assert item_ids[0] == crowded.pk

    def test_search_is_restricted_to_the_predicted_side(self, fake_pipeline):
        obverse_item, reverse_item = make_item(), make_item()
        catalogue_image(obverse_item, seed=400, side=Side.OBVERSE, pipeline=fake_pipeline)
        catalogue_image(reverse_item, seed=400, side=Side.REVERSE, pipeline=fake_pipeline)
        submission = create(files=[photo_upload(pattern_png(400))], sides=["reverse"])
        services.submission_process(submission_id=submission.pk)
        assert list(submission.candidates.values_list("item_id", flat=True)) == [reverse_item.pk]

    def test_two_photos_combine_the_evidence_of_both_sides(self, fake_pipeline):
        both, obverse_only = make_item(), make_item()
        catalogue_image(both, seed=500, side=Side.OBVERSE, pipeline=fake_pipeline)
        catalogue_image(both, seed=501, side=Side.REVERSE, pipeline=fake_pipeline)
        catalogue_image(obverse_only, seed=500, side=Side.OBVERSE, pipeline=fake_pipeline)  # same obverse
        catalogue_image(obverse_only, seed=999, side=Side.REVERSE, pipeline=fake_pipeline)
        files = [photo_upload(pattern_png(500)), photo_upload(pattern_png(501))]
        submission = create(files=files, sides=["obverse", "reverse"])
        services.submission_process(submission_id=submission.pk)
        first = submission.candidates.order_by("rank").first()
        assert first.item_id == both.pk
        assert set(first.side_scores) == {"obverse", "reverse"}

    def test_two_photos_read_as_one_side_are_decided_together(self, fake_pipeline, monkeypatch):
        # Both photos read as obverse, the second less surely: the pair is obverse + reverse.
        readings = iter([0.9, 0.6])
        process = fake_pipeline.process

        def reading(source, **kwargs):
            result = process(source, **kwargs)
            result.side_confidence = next(readings)
            return result

        monkeypatch.setattr(fake_pipeline, "process", reading)
        submission = create(files=[photo_upload(pattern_png(510)), photo_upload(pattern_png(511))])
        services.submission_process(submission_id=submission.pk)
        first, second = submission.images.order_by("position")
        assert (first.side, second.side) == ("obverse", "reverse")
        assert (
            first.side_confidence
            == second.side_confidence
            == pytest.approx(0.9 * 0.4 / (0.9 * 0.4 + 0.1 * 0.6), abs=1e-4)
        )
        queries = search.queries_of([first, second])
        assert [q[1] for q in queries] == ["obverse", "reverse"]

    def test_a_declared_side_settles_the_other_photo(self, fake_pipeline):
        # The fake reads every undeclared photo as obverse (0.97); the user said the second is the obverse.
        submission = create(
            files=[photo_upload(pattern_png(512)), photo_upload(pattern_png(513))], sides=["unknown", "obverse"]
        )
        services.submission_process(submission_id=submission.pk)
        first, second = submission.images.order_by("position")
        assert (first.side, first.side_confidence) == ("reverse", 1.0)
        assert (second.side, second.side_confidence) == ("obverse", 1.0)

    def test_two_declared_obverses_are_left_as_the_user_said(self, fake_pipeline):
        submission = create(
            files=[photo_upload(pattern_png(514)), photo_upload(pattern_png(515))], sides=["obverse", "obverse"]
        )
        services.submission_process(submission_id=submission.pk)
        assert [i.side for i in submission.images.order_by("position")] == ["obverse", "obverse"]

    def test_bad_input_fails_the_submission_with_the_reason(self, fake_pipeline):
        from mlcore.imageio import ImageDecodeError

        fake_pipeline.fail_with = ImageDecodeError("The file is not an image (or is damaged).")
        submission = create()
        services.submission_process(submission_id=submission.pk)
        submission.refresh_from_db()
        assert submission.status == SubmissionStatus.FAILED
        assert "not an image" in submission.error

    def test_a_transient_error_is_retried_then_fails_after_the_last_attempt(self, fake_pipeline, settings):
        settings.OBVERSE_PROCESSING_MAX_ATTEMPTS = 2
        fake_pipeline.fail_with = RuntimeError("worker lost its GPU")
        submission = create()
        with pytest.raises(RuntimeError):
            services.submission_process(submission_id=submission.pk)
        submission.refresh_from_db()
        assert submission.status == SubmissionStatus.RECEIVED and submission.attempts == 1
        services.submission_process(submission_id=submission.pk)
        submission.refresh_from_db()
        assert submission.status == SubmissionStatus.FAILED
        assert "RuntimeError" in submission.error

    def test_a_processed_submission_is_not_processed_again(self, fake_pipeline):
        catalogue_image(make_item(), seed=1, pipeline=fake_pipeline)
        submission = create()
        assert services.submission_process(submission_id=submission.pk)
        calls = fake_pipeline.calls
        assert not services.submission_process(submission_id=submission.pk)
        assert fake_pipeline.calls == calls

    def test_a_rerun_after_a_crash_replaces_candidates_without_duplicates(self, fake_pipeline):
        for i in range(3):
            catalogue_image(make_item(), seed=600 + i, pipeline=fake_pipeline)
        submission = create()
        services.submission_process(submission_id=submission.pk)
        before = list(Candidate.objects.filter(submission=submission).values_list("item_id", "rank"))
        services.submission_process(submission_id=submission.pk, force=True)
        after = list(Candidate.objects.filter(submission=submission).values_list("item_id", "rank"))
        assert before == after and len(after) == 3
        assert submission.images.count() == 1

    def test_a_stale_processing_claim_is_taken_over(self, fake_pipeline, settings):
        from datetime import timedelta

        from django.utils import timezone

        submission = create()
        Submission.objects.filter(pk=submission.pk).update(
            status=SubmissionStatus.PROCESSING, processing_started_at=timezone.now() - timedelta(hours=1)
        )
        assert services.submission_process(submission_id=submission.pk)
        submission.refresh_from_db()
        assert submission.status == SubmissionStatus.AWAITING_REVIEW
        assert submission.attempts == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_starting_one_submission_exactly_one_wins(monkeypatch):
    monkeypatch.setattr(services, "submission_enqueue", lambda submission_id: None)  # started by hand below
    submission = create()
    results, barrier = [], threading.Barrier(2)

    def start():
        barrier.wait()
        results.append(services._start_processing(submission.pk))
        connection.close()

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, True]


class TestRecompute:
    def test_it_narrows_candidates_by_a_metadata_filter(self, fake_pipeline):
        silver, gold = make_concept("material", "Silver"), make_concept("material", "Gold")
        gold_item = make_item(concepts=[gold])
        silver_item = make_item(concepts=[silver])
        catalogue_image(gold_item, seed=700, pipeline=fake_pipeline)
        catalogue_image(silver_item, seed=701, pipeline=fake_pipeline)
        submission = create(files=[photo_upload(pattern_png(700))])
        services.submission_process(submission_id=submission.pk)
        assert submission.candidates.order_by("rank").first().item_id == gold_item.pk
        services.submission_recompute(submission_id=submission.pk, filters={"material": silver.slug, "bogus": "x"})
        submission.refresh_from_db()
        assert submission.filters == {"material": silver.slug}
        assert list(submission.candidates.values_list("item_id", flat=True)) == [silver_item.pk]

    def test_it_narrows_by_region_too(self, fake_pipeline):
        asia, gaul = make_concept("region", "Asia"), make_concept("region", "Gaul")
        asian, gallic = make_item(concepts=[asia]), make_item(concepts=[gaul])
        catalogue_image(asian, seed=702, pipeline=fake_pipeline)
        catalogue_image(gallic, seed=703, pipeline=fake_pipeline)
        submission = create(files=[photo_upload(pattern_png(702))])
        services.submission_process(submission_id=submission.pk)
        services.submission_recompute(submission_id=submission.pk, filters={"region": gaul.slug})
        submission.refresh_from_db()
        assert submission.filters == {"region": gaul.slug}
        assert list(submission.candidates.values_list("item_id", flat=True)) == [gallic.pk]

    def test_it_refuses_before_processing_has_finished(self):
        submission = create()
        with pytest.raises(ValidationError):
            services.submission_recompute(submission_id=submission.pk, filters={})
        submission.refresh_from_db()
        assert submission.filters == {} and submission.status == SubmissionStatus.RECEIVED


class TestRecomputeAfterRetraining:
    """A retraining indexes the catalogue for a new version: narrowing keeps to the photos' own version."""

    @pytest.fixture
    def processed(self, fake_pipeline):
        """A photo processed with version 1, whose own item is its first candidate."""
        items = [make_item() for _ in range(3)]
        for i, item in enumerate(items):
            catalogue_image(item, seed=720 + i, pipeline=fake_pipeline)
        submission = create(files=[photo_upload(pattern_png(721))])
        services.submission_process(submission_id=submission.pk)
        assert submission.candidates.get(rank=1).item_id == items[1].pk
        return submission, items

    def _retrain(self, fake_pipeline, items) -> None:
        """Version 2 is active, and its index puts another item nearest the photo."""
        fake_pipeline.embedder.version = "2"
        first = {item.pk: ImageEmbedding.objects.get(item=item, model_version="1") for item in items}
        for item, other in zip(items, items[1:] + items[:1], strict=True):
            ImageEmbedding.objects.create(
                image_id=first[item.pk].image_id,
                item=item,
                side=first[item.pk].side,
                model_name="fake-pixels",
                model_version="2",
                vector=np.asarray(first[other.pk].vector, dtype=np.float32),  # item i sits where item i+1 was
            )

    def test_it_searches_the_index_of_the_version_that_embedded_the_photos(self, processed, fake_pipeline, monkeypatch):
        submission, items = processed
        self._retrain(fake_pipeline, items)
        monkeypatch.setattr(pipeline_cache, "get_pipeline", lambda version=None: pytest.fail("no model in the web"))
        services.submission_recompute(submission_id=submission.pk, filters={})
        assert submission.candidates.get(rank=1).item_id == items[1].pk  # not items[0], nearest in version 2
        assert submission.candidates.get(rank=1).score == pytest.approx(1.0, abs=1e-3)

    def test_when_that_version_is_no_longer_indexed_the_worker_describes_the_photos_again(
        self, processed, fake_pipeline, django_capture_on_commit_callbacks
    ):
        submission, items = processed
        self._retrain(fake_pipeline, items)
        ImageEmbedding.objects.filter(model_version="1").delete()  # pruned after the switch
        silver = make_concept("material", "Silver")
        items[0].concepts.add(silver)
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            services.submission_recompute(submission_id=submission.pk, filters={"material": silver.slug})
        submission.refresh_from_db()
        assert submission.status == SubmissionStatus.RECEIVED and submission.filters == {"material": silver.slug}
        assert len(callbacks) == 1
        callbacks[0]()  # the worker (tasks run inline in tests)
        submission.refresh_from_db()
        image = submission.images.get()
        assert submission.status == SubmissionStatus.AWAITING_REVIEW
        assert image.embedding_model == ("fake-pixels", "2")
        assert list(submission.candidates.values_list("item_id", flat=True)) == [items[0].pk]

    def test_under_review_it_is_refused_and_nothing_changes(self, processed, fake_pipeline):
        submission, items = processed
        self._retrain(fake_pipeline, items)
        ImageEmbedding.objects.filter(model_version="1").delete()
        Submission.objects.filter(pk=submission.pk).update(status=SubmissionStatus.IN_REVIEW)
        before = list(submission.candidates.values_list("item_id", "rank"))
        with pytest.raises(ValidationError, match="indexed again"):
            services.submission_recompute(submission_id=submission.pk, filters={"material": "silver"})
        submission.refresh_from_db()
        assert submission.status == SubmissionStatus.IN_REVIEW and submission.filters == {}
        assert list(submission.candidates.values_list("item_id", "rank")) == before


class TestNoneMatch:
    def test_it_is_recorded_once_and_the_candidates_are_kept(self, fake_pipeline):
        catalogue_image(make_item(), seed=820, pipeline=fake_pipeline)
        submission = create(files=[photo_upload(pattern_png(821))])
        services.submission_process(submission_id=submission.pk)
        assert services.submission_none_match(submission_id=submission.pk) is True
        submission.refresh_from_db()
        first = submission.none_match_at
        assert first is not None and submission.candidates.count() == 1
        assert services.submission_none_match(submission_id=submission.pk) is False  # a second click
        submission.refresh_from_db()
        assert submission.none_match_at == first

    @pytest.mark.parametrize("status", [SubmissionStatus.RECEIVED, SubmissionStatus.FAILED, SubmissionStatus.RESOLVED])
    def test_it_is_refused_where_there_are_no_candidates_to_judge(self, status):
        submission = create()
        Submission.objects.filter(pk=submission.pk).update(status=status)
        with pytest.raises(ValidationError, match="processing has finished"):
            services.submission_none_match(submission_id=submission.pk)
        submission.refresh_from_db()
        assert submission.none_match_at is None


class TestChooseObject:
    """A photo of two coins: the user picks the other one, and the submission is described again."""

    @pytest.fixture
    def two_coins(self, fake_pipeline):
        left_item, right_item = make_item(), make_item()
        catalogue_image(left_item, seed=800, pipeline=FakePipeline())
        catalogue_image(right_item, seed=801, pipeline=FakePipeline())
        fake_pipeline.objects = 2
        submission = create(files=[photo_upload(two_coins_png(800, 801))])
        services.submission_process(submission_id=submission.pk)
        return submission, fake_pipeline, left_item, right_item

    def test_the_likeliest_object_is_described_and_every_object_is_reported(self, two_coins):
        submission, _, left_item, _ = two_coins
        image = submission.images.get()
        assert [(d["fraction"], d["chosen"]) for d in image.detections] == [
            ([0.0, 0.0, 0.5, 1.0], True),
            ([0.5, 0.0, 1.0, 1.0], False),
        ]
        assert submission.candidates.get(rank=1).item_id == left_item.pk

    def test_picking_the_other_object_describes_it_and_searches_again(
        self, two_coins, django_capture_on_commit_callbacks
    ):
        submission, pipeline, _, right_item = two_coins
        with django_capture_on_commit_callbacks(execute=True):  # the worker runs in sync mode here
            services.submission_choose_object(submission_id=submission.pk, position=0, index=1)
        submission.refresh_from_db()
        image = submission.images.get()
        assert pipeline.choices[-1] == 1
        assert submission.status == SubmissionStatus.AWAITING_REVIEW
        assert [d["chosen"] for d in image.detections] == [False, True] and image.object_choice == 1
        assert submission.candidates.get(rank=1).item_id == right_item.pk
        assert submission.candidates.count() == 2  # replaced, not added to

    def test_picking_the_object_already_described_changes_nothing(self, two_coins, django_capture_on_commit_callbacks):
        submission, pipeline, _, _ = two_coins
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            services.submission_choose_object(submission_id=submission.pk, position=0, index=0)
        assert callbacks == [] and pipeline.calls == 1
        submission.refresh_from_db()
        assert submission.status == SubmissionStatus.AWAITING_REVIEW

    @pytest.mark.parametrize(("position", "index"), [(0, 2), (1, 0)])
    def test_an_object_or_photo_that_does_not_exist_is_refused(self, two_coins, position, index):
        submission, _, _, _ = two_coins
        with pytest.raises(ValidationError, match="No such object|no such photo"):
            services.submission_choose_object(submission_id=submission.pk, position=position, index=index)

    def test_once_reviewed_the_coin_can_no_longer_be_changed(self, two_coins, django_user_model):
        from review.models import Review

        submission, pipeline, _, _ = two_coins
        volunteer = django_user_model.objects.create_user("vol", password="x")
        Review.objects.create(submission=submission, reviewer=volunteer, decision="unsure")
        with pytest.raises(ValidationError, match="first review"):
            services.submission_choose_object(submission_id=submission.pk, position=0, index=1)
        submission.refresh_from_db()
        assert submission.status == SubmissionStatus.AWAITING_REVIEW and pipeline.calls == 1
        assert submission.images.get().object_choice is None

    def test_a_second_pick_while_the_first_is_processed_is_refused(self, two_coins):
        submission, _, _, _ = two_coins
        services.submission_choose_object(submission_id=submission.pk, position=0, index=1)  # not run yet
        with pytest.raises(ValidationError, match="first review"):
            services.submission_choose_object(submission_id=submission.pk, position=0, index=1)
        submission.refresh_from_db()
        assert submission.status == SubmissionStatus.RECEIVED
