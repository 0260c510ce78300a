"""review.selectors: the learning-loop signal and the model's real-world accuracy."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import PermissionDenied

from review import selectors
from review import services as rs
from review.models import Proposal
from tests.factories import claim_and_review, make_item, make_submission, make_user

# Approvals index the new catalogue images inline: with the fake pipeline, never the real models.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fake_pipeline")]


def agree(submission, item, *reviewers):
    for reviewer in reviewers:
        claim_and_review(submission, reviewer, item=item)
    return Proposal.objects.get(submission=submission, status="pending")


class TestTrainingSignal:
    def test_accepted_matches_are_positives_and_outranking_or_rejected_items_hard_negatives(self, curator):
        items = [make_item() for _ in range(5)]
        submission = make_submission(items, two_photos=True)
        volunteers = [make_user(f"v{i}") for i in range(4)]
        wrong = agree(submission, items[4], volunteers[0], volunteers[1])
        rs.proposal_reject(proposal_id=wrong.pk, user=curator, reason="Different reverse.")
        right = agree(submission, items[2], volunteers[2], volunteers[3])
        rs.proposal_approve(proposal_id=right.pk, user=curator)
        pairs = selectors.training_signal()
        assert len(pairs) == 2  # one per photo
        assert {pair.side for pair in pairs} == {"obverse", "reverse"}
        for pair in pairs:
            assert pair.positive_item_id == items[2].pk
            assert pair.positive_rank == 3
            assert set(pair.hard_negative_item_ids) == {items[0].pk, items[1].pk, items[4].pk}

    def test_pending_and_new_item_proposals_are_not_ground_truth(self, volunteer):
        item = make_item()
        agree(make_submission([item]), item, volunteer, make_user("v2"))
        assert selectors.training_signal() == []


class TestModelAccuracy:
    def test_it_counts_where_the_accepted_item_stood(self, curator):
        items = [make_item() for _ in range(3)]
        volunteers = [make_user(f"v{i}") for i in range(2)]
        for accepted in (items[0], items[1], make_item()):  # rank 1, rank 2, not among candidates
            proposal = agree(make_submission(items), accepted, *volunteers)
            rs.proposal_approve(proposal_id=proposal.pk, user=curator)
        accuracy = selectors.model_accuracy()
        assert (accuracy["accepted_matches"], accuracy["top1"], accuracy["top8"]) == (3, 1, 2)
        assert accuracy["top8_rate"] == pytest.approx(2 / 3)


def test_history_and_dashboard_are_for_curators_only(volunteer):
    with pytest.raises(PermissionDenied):
        selectors.history_for(user=volunteer, item_id=1)
    with pytest.raises(PermissionDenied):
        selectors.dashboard_stats(user=volunteer)


def test_the_export_command_writes_one_json_line_per_query_photo(curator):
    from io import StringIO

    from django.core.management import call_command

    items = [make_item() for _ in range(3)]
    proposal = agree(make_submission(items, two_photos=True), items[1], make_user("v1"), make_user("v2"))
    rs.proposal_approve(proposal_id=proposal.pk, user=curator)
    out = StringIO()
    call_command("export_review_signal", stdout=out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rows) == 2
    assert {row["positive_item_id"] for row in rows} == {items[1].pk}
    assert all(row["hard_negative_item_ids"] == [items[0].pk] for row in rows)
