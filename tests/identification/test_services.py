"""identification.services: accepting, processing and searching, with a fake pipeline (fast)."""

from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from PIL import Image

from collection.models import ImageEmbedding, Side, SpecimenImage
from identification import services
from identification.models import Candidate, Submission, SubmissionStatus
from tests.factories import make_concept, make_image, make_item, make_specimen
from tests.identification.fakes import FakeEmbedder, FakePipeline, pattern_png

pytestmark = pytest.mark.django_db


@pytest.fixture
def fake_pipeline(monkeypatch):
    pipeline = FakePipeline()
    monkeypatch.setattr(services, "get_pipeline", lambda: pipeline)
    return pipeline


def upload(data: bytes = None, name: str = "coin.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, pattern_png(1) if data is None else data, content_type="image/png")


def catalogue_image(item, seed: int, side: str = Side.OBVERSE, pipeline=None) -> SpecimenImage:
    specimen = make_specimen(item)
    data = pattern_png(seed)
    image = SpecimenImage(specimen=specimen, side=side, sha256=hashlib.sha256(data).hexdigest())
    image.image.save(f"{specimen.record_id}.png", ContentFile(data), save=True)
    assert services.catalogue_image_index(image_id=image.pk, pipeline=pipeline)
    return image


def create(**kwargs) -> Submission:
    defaults = {"files": [upload()], "requester_name": "Ada", "requester_email": "ada@example.org"}
    return services.submission_create(**{**defaults, **kwargs})


class TestSubmissionCreate:
    def test_it_stores_the_submission_and_its_raw_photos(self, settings):
        submission = create(sides=["reverse"], notes="  found in a drawer ")
        image = submission.images.get()
        assert submission.status == SubmissionStatus.RECEIVED
        assert image.declared_side == "reverse"
        assert submission.notes == "found in a drawer"
        assert services.private_uploads().exists(image.upload_path)

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"files": []}, "images"),
            ({"files": [upload(), upload(), upload()]}, "images"),
            ({"files": [upload(b"")]}, "images"),
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
            create(files=[upload(b"x" * 101)])
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
            mlcore.imageio, "decode_image", lambda data, limits: seen.append(limits) or decode(data, limits=limits)
        )
        submission = create()
        services.submission_process(submission_id=submission.pk)
        assert [limits.max_bytes for limits in seen] == [30 * 2**20]
        assert services.decode_limits().max_bytes == 30 * 2**20

    def test_it_finds_the_matching_item_first_and_records_the_evidence(self, fake_pipeline):
        silver = make_concept("material", "Silver")
        items = [make_item(concepts=[silver] if i == 3 else []) for i in range(6)]
        matched = {item.pk: catalogue_image(item, seed=100 + i, pipeline=fake_pipeline) for i, item in enumerate(items)}
        submission = create(files=[upload(pattern_png(103))])
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
        submission = create(files=[upload(pattern_png(200))])
        services.submission_process(submission_id=submission.pk)
        item_ids = list(submission.candidates.values_list("item_id", flat=True))
        assert len(item_ids) == 8 == len(set(item_ids))
        assert item_ids[0] == crowded.pk

    def test_search_is_restricted_to_the_predicted_side(self, fake_pipeline):
        obverse_item, reverse_item = make_item(), make_item()
        catalogue_image(obverse_item, seed=400, side=Side.OBVERSE, pipeline=fake_pipeline)
        catalogue_image(reverse_item, seed=400, side=Side.REVERSE, pipeline=fake_pipeline)
        submission = create(files=[upload(pattern_png(400))], sides=["reverse"])
        services.submission_process(submission_id=submission.pk)
        assert list(submission.candidates.values_list("item_id", flat=True)) == [reverse_item.pk]

    def test_two_photos_combine_the_evidence_of_both_sides(self, fake_pipeline):
        both, obverse_only = make_item(), make_item()
        catalogue_image(both, seed=500, side=Side.OBVERSE, pipeline=fake_pipeline)
        catalogue_image(both, seed=501, side=Side.REVERSE, pipeline=fake_pipeline)
        catalogue_image(obverse_only, seed=500, side=Side.OBVERSE, pipeline=fake_pipeline)  # same obverse
        catalogue_image(obverse_only, seed=999, side=Side.REVERSE, pipeline=fake_pipeline)
        files = [upload(pattern_png(500)), upload(pattern_png(501))]
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
        submission = create(files=[upload(pattern_png(510)), upload(pattern_png(511))])
        services.submission_process(submission_id=submission.pk)
        first, second = submission.images.order_by("position")
        assert (first.side, second.side) == ("obverse", "reverse")
        assert (
            first.side_confidence
            == second.side_confidence
            == pytest.approx(0.9 * 0.4 / (0.9 * 0.4 + 0.1 * 0.6), abs=1e-4)
        )
        queries = services._queries([first, second])
        assert [q[1] for q in queries] == ["obverse", "reverse"]

    def test_a_declared_side_settles_the_other_photo(self, fake_pipeline):
        # The fake reads every undeclared photo as obverse (0.97); the user said the second is the obverse.
        submission = create(files=[upload(pattern_png(512)), upload(pattern_png(513))], sides=["unknown", "obverse"])
        services.submission_process(submission_id=submission.pk)
        first, second = submission.images.order_by("position")
        assert (first.side, first.side_confidence) == ("reverse", 1.0)
        assert (second.side, second.side_confidence) == ("obverse", 1.0)

    def test_two_declared_obverses_are_left_as_the_user_said(self, fake_pipeline):
        submission = create(files=[upload(pattern_png(514)), upload(pattern_png(515))], sides=["obverse", "obverse"])
        services.submission_process(submission_id=submission.pk)
        assert [i.side for i in submission.images.order_by("position")] == ["obverse", "obverse"]

    def test_bad_input_fails_the_submission_with_the_reason(self, monkeypatch):
        from mlcore.imageio import ImageDecodeError

        pipeline = FakePipeline(fail_with=ImageDecodeError("The file is not an image (or is damaged)."))
        monkeypatch.setattr(services, "get_pipeline", lambda: pipeline)
        submission = create()
        services.submission_process(submission_id=submission.pk)
        submission.refresh_from_db()
        assert submission.status == SubmissionStatus.FAILED
        assert "not an image" in submission.error

    def test_a_transient_error_is_retried_then_fails_after_the_last_attempt(self, monkeypatch, settings):
        settings.OBVERSE_PROCESSING_MAX_ATTEMPTS = 2
        pipeline = FakePipeline(fail_with=RuntimeError("worker lost its GPU"))
        monkeypatch.setattr(services, "get_pipeline", lambda: pipeline)
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
def test_two_workers_claiming_one_submission_exactly_one_wins(monkeypatch):
    monkeypatch.setattr(services, "submission_enqueue", lambda submission_id: None)  # claim by hand below
    submission = create()
    results, barrier = [], threading.Barrier(2)

    def claim():
        barrier.wait()
        results.append(services._claim(submission.pk))
        connection.close()

    threads = [threading.Thread(target=claim) for _ in range(2)]
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
        submission = create(files=[upload(pattern_png(700))])
        services.submission_process(submission_id=submission.pk)
        assert submission.candidates.order_by("rank").first().item_id == gold_item.pk
        services.submission_recompute(submission_id=submission.pk, filters={"material": silver.slug, "bogus": "x"})
        submission.refresh_from_db()
        assert submission.filters == {"material": silver.slug}
        assert list(submission.candidates.values_list("item_id", flat=True)) == [silver_item.pk]

    def test_it_refuses_before_processing_has_finished(self):
        submission = create()
        with pytest.raises(ValidationError):
            services.submission_recompute(submission_id=submission.pk, filters={})


class TestNoneMatch:
    def test_it_is_recorded_once_and_the_candidates_are_kept(self, fake_pipeline):
        catalogue_image(make_item(), seed=820, pipeline=fake_pipeline)
        submission = create(files=[upload(pattern_png(821))])
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


def two_coins_png(left: int, right: int) -> bytes:
    """Two pictures side by side in one photo (the two-object fake finds each half)."""
    photo = Image.new("RGB", (240, 120))
    photo.paste(Image.open(io.BytesIO(pattern_png(left))), (0, 0))
    photo.paste(Image.open(io.BytesIO(pattern_png(right))), (120, 0))
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    return buffer.getvalue()


class TestChooseObject:
    """A photo of two coins: the user picks the other one, and the submission is described again."""

    @pytest.fixture
    def two_coins(self, monkeypatch, django_capture_on_commit_callbacks):
        left_item, right_item = make_item(), make_item()
        catalogue_image(left_item, seed=800, pipeline=FakePipeline())
        catalogue_image(right_item, seed=801, pipeline=FakePipeline())
        pipeline = FakePipeline(objects=2)
        monkeypatch.setattr(services, "get_pipeline", lambda: pipeline)
        submission = create(files=[upload(two_coins_png(800, 801))])
        services.submission_process(submission_id=submission.pk)
        return submission, pipeline, left_item, right_item

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
        from identification.review_models import Review

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


class TurningFakePipeline(FakePipeline):
    """FakePipeline with the real pipeline's rotation search: the cut-out turned by 0/90/180/270°.

    (The fake upright step turns nothing, so its turns are the offsets alone; the angles it reports
    are the estimate plus each offset, as the real ``Pipeline.query_turns`` does.)
    """

    rotation_turns = 4

    def query_turns(self, cutout, angle, *, first=None):
        from mlcore.pipeline import QueryTurns

        offsets = np.arange(4) * 90.0
        vectors = []
        for offset in offsets:
            grey = cutout.convert("RGB").rotate(float(offset)).convert("L").resize((32, 40))
            vector = np.asarray(grey, dtype=np.float32).ravel() - 127.5
            vectors.append(vector / (np.linalg.norm(vector) or 1.0))
        if first is not None:
            vectors[0] = np.asarray(first, dtype=np.float32)
        return QueryTurns((angle + offsets) % 360.0, np.stack(vectors), np.zeros(4))


def turned_png(seed: int, angle: int) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(pattern_png(seed))).rotate(angle).save(buffer, format="PNG")
    return buffer.getvalue()


class TestRotationSearch:
    @pytest.fixture
    def turning_pipeline(self, monkeypatch):
        pipeline = TurningFakePipeline()
        monkeypatch.setattr(services, "get_pipeline", lambda: pipeline)
        return pipeline

    def _catalogue(self, pipeline):
        items = [make_item() for _ in range(6)]
        for i, item in enumerate(items):
            catalogue_image(item, seed=1100 + i, pipeline=pipeline)
        return items

    def test_a_photo_turned_off_upright_finds_its_item_through_the_right_turn(self, turning_pipeline):
        items = self._catalogue(turning_pipeline)
        # The fake "upright" step leaves the photo as it is: 90° off, as a wrong estimate would.
        submission = create(files=[upload(turned_png(1103, 90))])
        services.submission_process(submission_id=submission.pk)
        images = list(submission.images.order_by("position"))
        queries = services._queries(images)
        assert queries[0][2].shape == (4, 1280)
        assert queries[0][3] == [30.0, 120.0, 210.0, 300.0]  # the estimate (30°) plus each offset
        assert queries[0][4] == [0.0] * 4
        model = services.embedding_version(turning_pipeline)
        hits = services.candidates_search(queries=queries, model=model)
        assert hits[0].item_id == items[3].pk
        # 90° off + 270° turns it back: 30° + 270°.
        assert hits[0].angle == pytest.approx(300.0)
        # The estimate alone (turn 0) matches the upright catalogue image much less well.
        plain = services.candidates_search(queries=[(0, "obverse", queries[0][2][0])], model=model)
        assert hits[0].score > {h.item_id: h.score for h in plain}.get(items[3].pk, -1.0) + 0.1
        best = submission.candidates.order_by("rank").first()
        assert best.item_id == items[3].pk
        # The evidence image is shown turned by the alignment angle, not by the estimator's 30°.
        assert best.rotation == pytest.approx(-hits[0].angle)

    def test_an_implausible_turn_must_match_clearly_better_to_win(self, turning_pipeline):
        items = self._catalogue(turning_pipeline)
        submission = create(files=[upload(turned_png(1104, 90))])
        services.submission_process(submission_id=submission.pk)
        ((position, side, vectors, angles, _),) = services._queries(list(submission.images.all()))
        model = services.embedding_version(turning_pipeline)
        prior = [0.0, 0.0, 0.0, -1.0]  # the estimator rules out the turn that restores upright
        found = services.candidates_search(queries=[(position, side, vectors, angles, prior)], model=model)
        assert items[4].pk not in [h.item_id for h in found[:1]]
        free = services.candidates_search(queries=[(position, side, vectors, angles, [0.0] * 4)], model=model)
        assert free[0].item_id == items[4].pk

    def test_one_vector_per_photo_still_works_and_keeps_the_estimated_angle(self, turning_pipeline):
        items = self._catalogue(turning_pipeline)
        submission = create(files=[upload(pattern_png(1102))])
        services.submission_process(submission_id=submission.pk)
        image = submission.images.get()
        model = services.embedding_version(turning_pipeline)
        hits = services.candidates_search(queries=[(0, "obverse", image.embedding, [30.0])], model=model)
        assert hits[0].item_id == items[2].pk and hits[0].angle == 30.0
        assert services.candidates_search(queries=[(0, "obverse", image.embedding)], model=model)[0].angle is None

    def test_turns_are_computed_once_by_the_worker_and_a_narrowed_search_runs_no_model(
        self, turning_pipeline, monkeypatch
    ):
        items = self._catalogue(turning_pipeline)
        submission = create(files=[upload(turned_png(1103, 90))])
        services.submission_process(submission_id=submission.pk)
        image = submission.images.get()
        assert image.turns["angles"] == [30.0, 120.0, 210.0, 300.0]
        assert len(bytes(image.turn_vectors)) == 4 * 1280 * 4

        def no_model(*args, **kwargs):
            raise AssertionError("a narrowed search must reuse the stored turns")

        monkeypatch.setattr(turning_pipeline, "query_turns", no_model)
        services.submission_recompute(submission_id=submission.pk, filters={})
        best = submission.candidates.order_by("rank").first()
        assert best.item_id == items[3].pk and best.rotation == pytest.approx(-300.0, abs=3.0)

    def test_turns_the_pipeline_made_while_processing_are_stored_without_computing_them_again(
        self, turning_pipeline, monkeypatch
    ):
        from mlcore.pipeline import QueryTurns

        items = self._catalogue(turning_pipeline)
        process = turning_pipeline.process

        def process_with_turns(source, **kwargs):
            result = process(source, **kwargs)
            cutout = result.cutout
            made = TurningFakePipeline.query_turns(turning_pipeline, cutout, result.angle, first=result.embedding)
            result.turns = QueryTurns(made.angles, made.vectors, np.array([-0.3, -0.2, -0.1, 0.0]))
            return result

        def no_model(*args, **kwargs):
            raise AssertionError("the turns came with the result")

        monkeypatch.setattr(turning_pipeline, "process", process_with_turns)
        monkeypatch.setattr(turning_pipeline, "query_turns", no_model)
        submission = create(files=[upload(turned_png(1103, 90))])
        services.submission_process(submission_id=submission.pk)
        image = submission.images.get()
        assert image.turns == {"angles": [30.0, 120.0, 210.0, 300.0], "bonus": [-0.3, -0.2, -0.1, 0.0]}
        assert len(bytes(image.turn_vectors)) == 4 * 1280 * 4
        assert submission.candidates.order_by("rank").first().item_id == items[3].pk

    def test_a_rerun_forgets_the_turns_of_the_previous_attempt(self, turning_pipeline):
        self._catalogue(turning_pipeline)
        submission = create(files=[upload(turned_png(1103, 90))])
        services.submission_process(submission_id=submission.pk)
        image = submission.images.get()
        image.turns = {"angles": [1.0], "bonus": [0.0]}
        image.turn_vectors = np.zeros(1280, dtype=np.float32).tobytes()
        image.save()
        services.submission_process(submission_id=submission.pk, force=True)
        assert submission.images.get().turns["angles"] == [30.0, 120.0, 210.0, 300.0]

    def test_a_photo_without_a_readable_cut_out_is_searched_by_its_one_embedding(self, turning_pipeline):
        self._catalogue(turning_pipeline)
        submission = create(files=[upload(pattern_png(1101))])
        services.submission_process(submission_id=submission.pk)
        image = submission.images.get()
        image.cutout.storage.delete(image.cutout.name)
        image.turn_vectors, image.turns = None, {}  # as for a photo processed before turns were stored
        (query,) = services._queries([image])
        assert query[2].shape == (1, 1280) and query[3] == [30.0]

    def test_two_photos_of_one_predicted_side_search_both_sides_with_every_turn(self, turning_pipeline):
        self._catalogue(turning_pipeline)
        files = [upload(pattern_png(1100)), upload(pattern_png(1101))]
        submission = create(files=files)
        services.submission_process(submission_id=submission.pk)
        queries = services._queries(list(submission.images.order_by("position")))
        assert [(q[0], q[1], len(q[2])) for q in queries] == [(0, None, 4), (1, None, 4)]


class TestMetadataAgreement:
    """Candidates rank by similarity plus how far their metadata agrees with the nearest images' vote."""

    MODEL = ("test-embed", "agreement-1")

    def _item(self, cosine: float, axis: int, concepts) -> object:
        """An item whose one obverse image sits at ``cosine`` from the query direction (axis 0)."""
        item = make_item(concepts=concepts)
        vector = np.zeros(1280, dtype=np.float32)
        vector[0], vector[axis] = cosine, np.sqrt(1 - cosine**2)
        image = make_image(make_specimen(item), Side.OBVERSE)
        ImageEmbedding.objects.create(
            image=image,
            item=item,
            side=Side.OBVERSE,
            model_name=self.MODEL[0],
            model_version=self.MODEL[1],
            vector=vector,
        )
        return item

    def _catalogue(self, with_labels: bool):
        nero, vespasian = make_concept("authority", "Nero"), make_concept("authority", "Vespasian")
        odd = self._item(0.91, 1, [vespasian] if with_labels else [])  # the single closest image
        mine = self._item(0.90, 2, [nero] if with_labels else [])
        # Four more of Nero a little further away: the nearest images point to Nero...
        for axis, cosine in enumerate((0.85, 0.84, 0.83, 0.82), start=3):
            self._item(cosine, axis, [nero] if with_labels else [])
        # ...more than the neighbourhood at large does (it is mostly Galba's).
        galba = make_concept("authority", "Galba")
        for axis in range(7, 37):
            self._item(0.5 - axis / 1000, axis, [galba] if with_labels else [])
        return odd, mine

    def query(self):
        vector = np.zeros(1280, dtype=np.float32)
        vector[0] = 1.0
        return [(0, Side.OBVERSE, vector)]

    def test_an_item_of_the_ruler_the_neighbours_agree_on_moves_above_a_slightly_closer_one(self):
        odd, mine = self._catalogue(with_labels=True)
        hits = services.candidates_search(queries=self.query(), model=self.MODEL)
        ranked = [h.item_id for h in hits]
        assert ranked[0] == mine.pk and ranked.index(odd.pk) > 0
        # The score stays the similarity; the agreement is kept apart as the evidence of the move.
        by_item = {h.item_id: h for h in hits}
        assert by_item[mine.pk].score == pytest.approx(0.90, abs=2e-3)
        assert by_item[odd.pk].score == pytest.approx(0.91, abs=2e-3)
        assert by_item[mine.pk].agreement > by_item[odd.pk].agreement > 0

    def test_without_metadata_the_closest_image_wins(self):
        odd, mine = self._catalogue(with_labels=False)
        hits = services.candidates_search(queries=self.query(), model=self.MODEL)
        assert [h.item_id for h in hits[:2]] == [odd.pk, mine.pk]
        assert all(h.agreement == 0 for h in hits)


class TestCatalogueIndex:
    def test_it_writes_one_embedding_per_model_version_and_is_idempotent(self, fake_pipeline):
        image = catalogue_image(make_item(), seed=800, pipeline=fake_pipeline)
        assert services.catalogue_image_index(image_id=image.pk, pipeline=fake_pipeline)
        embedding = ImageEmbedding.objects.get(image=image)
        assert (embedding.model_name, embedding.model_version, embedding.side) == ("fake-pixels", "1", "obverse")
        assert embedding.item_id == image.specimen.item_id
        image.refresh_from_db()
        assert image.cutout

    def test_a_trained_embedders_long_version_fits(self, fake_pipeline):
        # A trained recipe's version names the recipe, the projection and the training stamp.
        fake_pipeline.embedder = FakeEmbedder()  # its own, not the class-level one other tests share
        fake_pipeline.embedder.version = "gem-1-s256-grey-disc-gem3-sqrt-low112b1.5+lw512@20261129T093412Z-4f2a9c1e"
        image = catalogue_image(make_item(), seed=802, pipeline=fake_pipeline)
        assert ImageEmbedding.objects.get(image=image).model_version == fake_pipeline.embedder.version

    def test_another_version_embeds_the_stored_cutout_without_finding_the_object_again(self, fake_pipeline):
        image = catalogue_image(make_item(), seed=803, pipeline=fake_pipeline)
        image.refresh_from_db()
        cutout_name, calls = image.cutout.name, fake_pipeline.calls
        fake_pipeline.embedder = FakeEmbedder()  # its own, not the class-level one other tests share
        fake_pipeline.embedder.version = "2"
        assert services.catalogue_image_index(image_id=image.pk, pipeline=fake_pipeline)
        assert (fake_pipeline.calls, fake_pipeline.cutouts_embedded) == (calls, 1)
        new = ImageEmbedding.objects.get(image=image, model_version="2")
        with image.cutout.open("rb") as fh, Image.open(fh) as cutout:
            assert np.allclose(np.asarray(new.vector, dtype=np.float32), fake_pipeline.embed_cutout(cutout), atol=1e-3)
        assert ImageEmbedding.objects.filter(image=image, model_version="1").exists()  # kept until pruned
        image.refresh_from_db()
        assert image.cutout.name == cutout_name

    def test_recut_or_an_unreadable_cutout_finds_the_object_again(self, fake_pipeline):
        image = catalogue_image(make_item(), seed=804, pipeline=fake_pipeline)
        calls = fake_pipeline.calls
        assert services.catalogue_image_index(image_id=image.pk, pipeline=fake_pipeline, recut=True)
        assert fake_pipeline.calls == calls + 1
        image.refresh_from_db()
        with image.cutout.open("wb") as fh:
            fh.write(b"not a png")
        assert services.catalogue_image_index(image_id=image.pk, pipeline=fake_pipeline)
        assert (fake_pipeline.calls, fake_pipeline.cutouts_embedded) == (calls + 2, 0)
        image.refresh_from_db()
        with image.cutout.open("rb") as fh, Image.open(fh) as cutout:
            assert cutout.size == (96, 96)  # stored again

    def test_pending_images_are_those_without_the_active_version(self, fake_pipeline):
        image = catalogue_image(make_item(), seed=801, pipeline=fake_pipeline)
        assert not services.catalogue_pending_images(model=("fake-pixels", "1")).filter(pk=image.pk).exists()
        assert services.catalogue_pending_images(model=("fake-pixels", "2")).filter(pk=image.pk).exists()


class TestModelsTrain:
    def test_it_refuses_a_catalogue_too_small_to_learn_from(self):
        with pytest.raises(ValidationError):
            services.models_train()

    def test_a_new_version_is_indexed_before_it_is_activated(self, monkeypatch, fake_pipeline):
        """Search keeps the previous version's complete index while the new one is embedded."""
        from types import SimpleNamespace

        from mlcore.train import TrainingReport
        from tests.factories import make_image

        for _ in range(4):
            specimen = make_specimen(make_item())
            make_image(specimen, Side.OBVERSE)
            make_image(specimen, Side.REVERSE)
        events = []

        def fake_train_all(records, **kwargs):
            events.append(("train", kwargs["activate"]))
            return TrainingReport(
                version="v2", path=Path("."), records=len(records), images=8, seconds=0.0, activated=False
            )

        class StagedPipeline:
            def __init__(self, pinned_version):
                self.pinned_version = pinned_version
                self.embedder = SimpleNamespace(name="fake-pixels", version=f"2@{pinned_version}")

        def fake_index(*, image_id, pipeline):
            events.append(("index", getattr(pipeline, "pinned_version", "active")))
            return True

        monkeypatch.setattr("mlcore.train.train_all", fake_train_all)
        # The new version's pipeline (pinned), and after the switch the active one.
        monkeypatch.setattr(
            services, "get_pipeline", lambda version=None: StagedPipeline(version) if version else fake_pipeline
        )
        monkeypatch.setattr(
            "mlcore.versions.version_activate", lambda models_dir, version: events.append(("activate", version))
        )
        monkeypatch.setattr(services, "catalogue_image_index", fake_index)
        report = services.models_train(use_reviews=False)
        assert events[0] == ("train", False)  # trained, not yet active
        activated = events.index(("activate", "v2"))
        assert events[1:activated] == [("index", "v2")] * 8  # every catalogue image, for the new version
        # After the switch, images still lacking an embedding of the active version are caught up.
        assert set(events[activated + 1 :]) <= {("index", "active")}
        assert report.activated

    def test_without_reindex_the_new_version_is_activated_at_once(self, monkeypatch, fake_pipeline):
        from mlcore.train import TrainingReport
        from tests.factories import make_image

        for _ in range(4):
            make_image(make_specimen(make_item()), Side.OBVERSE)
        activated = []
        report = TrainingReport(version="v3", path=Path("."), records=4, images=4, seconds=0.0, activated=False)
        monkeypatch.setattr("mlcore.train.train_all", lambda records, **kwargs: report)
        monkeypatch.setattr("mlcore.versions.version_activate", lambda models_dir, version: activated.append(version))
        monkeypatch.setattr(services, "catalogue_image_index", lambda **kwargs: pytest.fail("nothing is indexed"))
        services.models_train(use_reviews=False, reindex=False)
        assert activated == ["v3"]

    def test_training_is_queued_for_the_worker_after_commit(self, monkeypatch, django_capture_on_commit_callbacks):
        from django_q import tasks as q_tasks

        queued = []
        monkeypatch.setattr(q_tasks, "async_task", lambda name, **kwargs: queued.append(name))
        with django_capture_on_commit_callbacks(execute=True):
            services.models_train_enqueue()
        assert queued == ["identification.tasks.train_models"]
