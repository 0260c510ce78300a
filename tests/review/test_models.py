"""review.models: the constraints that keep the workflow consistent even without the services."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from review.models import Claim, Proposal, Review, ReviewEvent
from tests.factories import make_item, make_submission, make_user

pytestmark = pytest.mark.django_db


def claim(submission, user, **kwargs) -> Claim:
    return Claim.objects.create(
        submission=submission,
        volunteer=user,
        expires_at=kwargs.pop("expires_at", timezone.now() + timedelta(minutes=5)),
        **kwargs,
    )


class TestClaim:
    def test_a_submission_has_at_most_one_open_claim(self, volunteer):
        submission = make_submission()
        claim(submission, volunteer)
        with pytest.raises(IntegrityError), transaction.atomic():
            claim(submission, make_user("volunteer2"))

    def test_released_claims_do_not_block_a_new_one(self, volunteer):
        submission = make_submission()
        claim(submission, volunteer, released_at=timezone.now())
        assert claim(submission, make_user("volunteer2")).pk

    def test_active_means_unreleased_and_unexpired(self, volunteer):
        live = claim(make_submission(), volunteer)
        expired = claim(make_submission(), volunteer, expires_at=timezone.now() - timedelta(seconds=1))
        released = claim(make_submission(), volunteer, released_at=timezone.now())
        assert list(Claim.objects.active()) == [live]
        assert (live.is_active, expired.is_active, released.is_active) == (True, False, False)


class TestReview:
    def test_a_volunteer_reviews_a_submission_once_per_round(self, volunteer):
        submission = make_submission()
        Review.objects.create(submission=submission, reviewer=volunteer, decision="unsure")
        with pytest.raises(IntegrityError), transaction.atomic():
            Review.objects.create(submission=submission, reviewer=volunteer, decision="not_identifiable")
        assert Review.objects.create(submission=submission, reviewer=volunteer, decision="unsure", round=1).pk

    def test_a_match_names_its_item(self, volunteer):
        with pytest.raises(IntegrityError), transaction.atomic():
            Review.objects.create(submission=make_submission(), reviewer=volunteer, decision="match")

    def test_verdicts_agree_on_decision_and_matched_item_only(self, volunteer):
        item = make_item()
        a = Review(decision="match", item=item, comment="a")
        b = Review(decision="match", item=item, comment="b")
        c = Review(decision="match", item=make_item())
        new1 = Review(decision="new_item", draft={"title": "x"})
        new2 = Review(decision="new_item", draft={"title": "y"})
        assert a.verdict == b.verdict != c.verdict
        assert new1.verdict == new2.verdict == ("new_item", None)


class TestProposal:
    def test_a_submission_has_at_most_one_pending_proposal(self):
        submission = make_submission()
        item = make_item()
        Proposal.objects.create(submission=submission, kind="attach", item=item, status="rejected")
        Proposal.objects.create(submission=submission, kind="attach", item=item)
        with pytest.raises(IntegrityError), transaction.atomic():
            Proposal.objects.create(submission=submission, kind="new_item", draft={"title": "x"})

    def test_an_attach_proposal_names_its_item(self):
        with pytest.raises(IntegrityError), transaction.atomic():
            Proposal.objects.create(submission=make_submission(), kind="attach")

    def test_it_links_to_its_curator_page(self):
        proposal = Proposal.objects.create(submission=make_submission(), kind="attach", item=make_item())
        assert proposal.get_absolute_url() == f"/review/proposals/{proposal.pk}/"


def test_events_read_in_the_order_they_happened(volunteer):
    submission = make_submission()
    later = ReviewEvent.objects.create(submission=submission, action="reviewed", actor=volunteer)
    earlier = ReviewEvent.objects.create(
        submission=submission, action="claimed", actor=volunteer, created_at=timezone.now() - timedelta(minutes=1)
    )
    assert list(submission.events.all()) == [earlier, later]
    assert "claimed" in str(earlier)
