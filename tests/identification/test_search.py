"""identification.search: the rotation search, the metadata agreement and the queries made of stored photos."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pgvector.django import CosineDistance
from PIL import Image

from collection.models import ImageEmbedding, Side
from identification import pipeline_cache, search, services
from identification.pipeline_cache import embedding_version
from tests.factories import (
    catalogue_image,
    make_concept,
    make_image,
    make_item,
    make_specimen,
    pattern_png,
    photo_upload,
)
from tests.fakes import FakePipeline, fake_get_pipeline

pytestmark = pytest.mark.django_db


def create(**kwargs):
    defaults = {"files": [photo_upload()], "requester_name": "Ada", "requester_email": "ada@example.org"}
    return services.submission_create(**{**defaults, **kwargs})


class TurningFakePipeline(FakePipeline):
    """FakePipeline with the real pipeline's rotation search: the cut-out turned by 0/90/180/270°.

    (The fake upright step turns nothing, so its turns are the offsets alone; the angles it reports
    are the estimate plus each offset, as the real ``Pipeline.query_turns`` does.)
    """

    rotation_turns = 4

    def process(self, source, **kwargs):
        # As the real pipeline does for a photo (not for an upright catalogue image): its turns come with it.
        result = super().process(source, **kwargs)
        if not kwargs.get("assume_upright"):
            result.turns = self.query_turns(result.cutout, result.angle, first=result.embedding)
        return result

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
        monkeypatch.setattr(pipeline_cache, "get_pipeline", fake_get_pipeline(pipeline))
        return pipeline

    def _catalogue(self, pipeline):
        items = [make_item() for _ in range(6)]
        for i, item in enumerate(items):
            catalogue_image(item, seed=1100 + i, pipeline=pipeline)
        return items

    def test_a_photo_turned_off_upright_finds_its_item_through_the_right_turn(self, turning_pipeline):
        items = self._catalogue(turning_pipeline)
        # The fake "upright" step leaves the photo as it is: 90° off, as a wrong estimate would.
        submission = create(files=[photo_upload(turned_png(1103, 90))])
        services.submission_process(submission_id=submission.pk)
        images = list(submission.images.order_by("position"))
        queries = search.queries_of(images)
        assert queries[0][2].shape == (4, 1280)
        assert queries[0][3] == [30.0, 120.0, 210.0, 300.0]  # the estimate (30°) plus each offset
        assert queries[0][4] == [0.0] * 4
        model = embedding_version(turning_pipeline)
        hits = search.candidates_search(queries=queries, model=model)
        assert hits[0].item_id == items[3].pk
        # 90° off + 270° turns it back: 30° + 270°.
        assert hits[0].angle == pytest.approx(300.0)
        # The estimate alone (turn 0) matches the upright catalogue image much less well.
        plain = search.candidates_search(queries=[(0, "obverse", queries[0][2][0])], model=model)
        assert hits[0].score > {h.item_id: h.score for h in plain}.get(items[3].pk, -1.0) + 0.1
        best = submission.candidates.order_by("rank").first()
        assert best.item_id == items[3].pk
        # The evidence image is shown turned by the alignment angle, not by the estimator's 30°.
        assert best.rotation == pytest.approx(-hits[0].angle)

    def test_an_implausible_turn_must_match_clearly_better_to_win(self, turning_pipeline):
        items = self._catalogue(turning_pipeline)
        submission = create(files=[photo_upload(turned_png(1104, 90))])
        services.submission_process(submission_id=submission.pk)
        ((position, side, vectors, angles, _),) = search.queries_of(list(submission.images.all()))
        model = embedding_version(turning_pipeline)
        prior = [0.0, 0.0, 0.0, -1.0]  # the estimator rules out the turn that restores upright
        found = search.candidates_search(queries=[(position, side, vectors, angles, prior)], model=model)
        assert items[4].pk not in [h.item_id for h in found[:1]]
        free = search.candidates_search(queries=[(position, side, vectors, angles, [0.0] * 4)], model=model)
        assert free[0].item_id == items[4].pk

    def test_one_vector_per_photo_still_works_and_keeps_the_estimated_angle(self, turning_pipeline):
        items = self._catalogue(turning_pipeline)
        submission = create(files=[photo_upload(pattern_png(1102))])
        services.submission_process(submission_id=submission.pk)
        image = submission.images.get()
        model = embedding_version(turning_pipeline)
        hits = search.candidates_search(queries=[(0, "obverse", image.embedding, [30.0])], model=model)
        assert hits[0].item_id == items[2].pk and hits[0].angle == 30.0
        assert search.candidates_search(queries=[(0, "obverse", image.embedding)], model=model)[0].angle is None

    def test_turns_are_stored_by_the_worker_and_a_narrowed_search_runs_no_model(self, turning_pipeline, monkeypatch):
        items = self._catalogue(turning_pipeline)
        submission = create(files=[photo_upload(turned_png(1103, 90))])
        services.submission_process(submission_id=submission.pk)
        image = submission.images.get()
        assert image.turns["angles"] == [30.0, 120.0, 210.0, 300.0]
        assert len(bytes(image.turn_vectors)) == 4 * 1280 * 4

        def no_model(*args, **kwargs):
            raise AssertionError("a narrowed search runs in the web process: it must load no model")

        monkeypatch.setattr(pipeline_cache, "get_pipeline", no_model)
        services.submission_recompute(submission_id=submission.pk, filters={})
        best = submission.candidates.order_by("rank").first()
        assert best.item_id == items[3].pk and best.rotation == pytest.approx(-300.0, abs=3.0)

    def test_the_turns_the_pipeline_made_while_processing_are_stored_as_made(self, turning_pipeline, monkeypatch):
        from mlcore.pipeline import QueryTurns

        items = self._catalogue(turning_pipeline)
        process = turning_pipeline.process

        def process_with_prior(source, **kwargs):
            result = process(source, **kwargs)
            result.turns = QueryTurns(result.turns.angles, result.turns.vectors, np.array([-0.3, -0.2, -0.1, 0.0]))
            return result

        monkeypatch.setattr(turning_pipeline, "process", process_with_prior)
        submission = create(files=[photo_upload(turned_png(1103, 90))])
        services.submission_process(submission_id=submission.pk)
        image = submission.images.get()
        assert image.turns == {"angles": [30.0, 120.0, 210.0, 300.0], "bonus": [-0.3, -0.2, -0.1, 0.0]}
        assert len(bytes(image.turn_vectors)) == 4 * 1280 * 4
        assert submission.candidates.order_by("rank").first().item_id == items[3].pk

    def test_a_rerun_forgets_the_turns_of_the_previous_attempt(self, turning_pipeline):
        self._catalogue(turning_pipeline)
        submission = create(files=[photo_upload(turned_png(1103, 90))])
        services.submission_process(submission_id=submission.pk)
        image = submission.images.get()
        image.turns = {"angles": [1.0], "bonus": [0.0]}
        image.turn_vectors = np.zeros(1280, dtype=np.float32).tobytes()
        image.save()
        services.submission_process(submission_id=submission.pk, force=True)
        assert submission.images.get().turns["angles"] == [30.0, 120.0, 210.0, 300.0]

    def test_a_photo_without_a_readable_cut_out_is_searched_by_its_one_embedding(self, turning_pipeline):
        self._catalogue(turning_pipeline)
        submission = create(files=[photo_upload(pattern_png(1101))])
        services.submission_process(submission_id=submission.pk)
        image = submission.images.get()
        image.cutout.storage.delete(image.cutout.name)
        image.turn_vectors, image.turns = None, {}  # as for a photo processed before turns were stored
        (query,) = search.queries_of([image])
        assert query[2].shape == (1, 1280) and query[3] == [30.0]

    def test_two_photos_of_one_predicted_side_search_both_sides_with_every_turn(self, turning_pipeline):
        self._catalogue(turning_pipeline)
        files = [photo_upload(pattern_png(1100)), photo_upload(pattern_png(1101))]
        submission = create(files=files)
        services.submission_process(submission_id=submission.pk)
        queries = search.queries_of(list(submission.images.order_by("position")))
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
        hits = search.candidates_search(queries=self.query(), model=self.MODEL)
        ranked = [h.item_id for h in hits]
        assert ranked[0] == mine.pk and ranked.index(odd.pk) > 0
        # The score stays the similarity; the agreement is kept apart as the evidence of the move.
        by_item = {h.item_id: h for h in hits}
        assert by_item[mine.pk].score == pytest.approx(0.90, abs=2e-3)
        assert by_item[odd.pk].score == pytest.approx(0.91, abs=2e-3)
        assert by_item[mine.pk].agreement > by_item[odd.pk].agreement > 0

    def test_without_metadata_the_closest_image_wins(self):
        odd, mine = self._catalogue(with_labels=False)
        hits = search.candidates_search(queries=self.query(), model=self.MODEL)
        assert [h.item_id for h in hits[:2]] == [odd.pk, mine.pk]
        assert all(h.agreement == 0 for h in hits)


class TestThePlanner:
    """An unfiltered search reads the HNSW index even where the planner would scan the table."""

    def _plan(self, pin_index: bool) -> str:
        from django.db import connection, transaction

        from collection.models import ImageEmbedding
        from identification.search import _hnsw_settings

        vector = [1.0] + [0.0] * 1279
        queryset = ImageEmbedding.objects.filter(side="obverse").order_by(CosineDistance("vector", vector))[:80]
        sql, params = queryset.values_list("image_id").query.sql_with_params()
        with transaction.atomic(), _hnsw_settings(pin_index=pin_index), connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN {sql}", params)
            return "\n".join(row[0] for row in cursor.fetchall())

    def test_a_large_index_is_read_through_hnsw_and_a_small_one_left_to_the_planner(self, fake_pipeline, settings):
        from django.db import connection

        catalogue_image(make_item(), seed=7, pipeline=fake_pipeline)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE collection_imageembedding")  # the planner's row estimate: 1
        assert "hnsw" not in self._plan(pin_index=False).lower()  # a few rows: the planner scans them
        assert "hnsw" not in self._plan(pin_index=True).lower()  # still small: left to the planner
        settings.OBVERSE_HNSW_PIN_ABOVE = 0  # as if it were large
        assert "embedding_vector_hnsw" in self._plan(pin_index=True)
