"""review.training: approved reviews reach ``identification.training.models_train`` / ``train_models``."""

from __future__ import annotations

import io
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from PIL import Image, ImageDraw

from identification import training
from mlcore.train import TrainingReport, feedback_pairs
from review import rules
from review import services as rs
from review.models import Proposal
from tests.factories import claim_and_review, make_image, make_item, make_specimen, make_submission, make_user

# Approvals index the new catalogue images inline: with the fake pipeline, never the real models.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fake_pipeline")]


def _pixels(images) -> np.ndarray:
    """A stand-in for the backbone: grey pixels as a vector (the test is about plumbing, not vision)."""
    rows = [np.asarray(image.convert("L").resize((8, 8)), dtype=np.float32).ravel() + 1.0 for image in images]
    vectors = np.asarray(rows).reshape(len(rows), 64)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _upright_jpeg(seed: int) -> bytes:
    image = Image.new("RGB", (96, 96), (128, 128, 128))
    ImageDraw.Draw(image).ellipse([8, 8, 88, 88], fill=(100 + seed * 10, 90, 60))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def _catalogue(items, specimens_per_item: int = 2) -> dict[int, list[str]]:
    """Each item gets specimens with an obverse and a reverse photo; returns item id → record ids."""
    records = {}
    for item in items:
        records[item.pk] = []
        for _ in range(specimens_per_item):
            specimen = make_specimen(item)
            make_image(specimen, "obverse")
            make_image(specimen, "reverse")
            records[item.pk].append(specimen.record_id)
    return records


def _approved(items, accepted, curator, *, with_upright: bool = True):
    """A two-photo submission whose candidates are ``items`` in order, matched to ``accepted`` and approved."""
    submission = make_submission(items, two_photos=True)
    if with_upright:
        for image in submission.images.all():
            image.upright.save(f"{image.position}-upright.jpg", ContentFile(_upright_jpeg(image.position)), save=True)
    for number in range(rules.consensus_required()):
        claim_and_review(submission, make_user(f"reviewer-{submission.pk.hex[:6]}-{number}"), item=accepted)
    proposal = Proposal.objects.get(submission=submission, status="pending")
    rs.proposal_approve(proposal_id=proposal.pk, user=curator)
    proposal.refresh_from_db()
    return submission, proposal


@pytest.fixture
def captured(monkeypatch) -> dict:
    """Replace mlcore's train_all: record what it receives, count pairs with the real ``feedback_pairs``."""
    calls: dict = {}

    def fake_train_all(records, *, feedback=None, **kwargs):
        calls["records"] = records
        calls["feedback"] = list(feedback or [])

        def descriptor(record, side):
            return _pixels([Image.open(record.images[side])])[0] if side in record.images else None

        pairs = feedback_pairs(calls["feedback"], describe=_pixels, catalogue_descriptor=descriptor)
        calls["pairs"] = pairs
        metrics = {"feedback": pairs.summary()} if feedback else {}
        return TrainingReport(
            version="test",
            path=Path("."),
            records=len(records),
            images=0,
            seconds=0.0,
            activated=True,
            metrics=metrics,
            feedback_pairs=len(pairs.query),
        )

    monkeypatch.setattr("mlcore.train.train_all", fake_train_all)
    monkeypatch.setattr("mlcore.versions.version_activate", lambda models_dir, version: None)  # nothing on disk
    return calls


class TestModelsTrainWithReviews:
    def test_approved_decisions_become_positive_and_hard_negative_pairs(self, curator, captured):
        items = [make_item() for _ in range(4)]
        records = _catalogue(items)
        submission, proposal = _approved(items, items[2], curator)  # ranked 3rd: items 0 and 1 outranked it
        report = training.models_train(reindex=False)
        feedback = captured["feedback"]
        assert len(feedback) == 2  # one per photo
        uprights = {Path(image.upright.path) for image in submission.images.all()}
        assert {Path(example.query) for example in feedback} == uprights
        assert {example.side for example in feedback} == {"obverse", "reverse"}
        for example in feedback:
            # The accepted item's catalogue specimens, not the one the approval made from this photo.
            assert sorted(r.record_id for r in example.positives) == sorted(records[items[2].pk])
            assert proposal.specimen.record_id not in {r.record_id for r in example.positives}
            assert example.own_record_id == proposal.specimen.record_id  # never its own match when scored
            negatives = {r.record_id for r in example.negatives}
            assert negatives == set(records[items[0].pk]) | set(records[items[1].pk])
        assert report.feedback_pairs == 4  # 2 photos × 2 specimens of the accepted item
        assert captured["pairs"].summary()["hard_negative_pairs"] == 8

    def test_photos_without_an_upright_file_are_left_out(self, curator, captured):
        items = [make_item() for _ in range(2)]
        _catalogue(items)
        _approved(items, items[0], curator, with_upright=False)
        training.models_train(reindex=False)
        assert captured["feedback"] == []

    def test_it_can_ignore_the_reviews(self, curator, captured):
        items = [make_item() for _ in range(3)]
        _catalogue(items)
        _approved(items, items[1], curator)
        training.models_train(reindex=False, use_reviews=False)
        assert captured["feedback"] == []

    def test_excluded_specimens_are_neither_trained_on_nor_positives(self, curator, captured):
        items = [make_item() for _ in range(3)]
        records = _catalogue(items, specimens_per_item=3)
        _approved(items, items[1], curator)
        left_out = records[items[1].pk][0]
        training.models_train(reindex=False, exclude_record_ids=[left_out])
        assert left_out not in {r.record_id for r in captured["records"]}
        assert all(left_out not in {r.record_id for r in e.positives} for e in captured["feedback"])
        assert len(captured["feedback"]) == 2


class TestTrainModelsCommand:
    def test_it_prints_how_many_review_pairs_were_used(self, curator, captured):
        items = [make_item() for _ in range(3)]
        _catalogue(items)
        _approved(items, items[1], curator)
        out = StringIO()
        call_command("train_models", "--no-reindex", stdout=out)
        assert "Review signal: 4 review pairs used (2 of 2 reviewed photos, 4 hard-negative pairs)." in out.getvalue()

    def test_without_reviews_it_says_none_were_used(self, captured):
        _catalogue([make_item() for _ in range(3)])
        out = StringIO()
        call_command("train_models", "--no-reindex", stdout=out)
        assert "Review signal: 0 review pairs used" in out.getvalue()
        assert captured["feedback"] == []
