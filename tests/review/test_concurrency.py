"""Real concurrent transactions on PostgreSQL: two volunteers claiming, two curators approving, at once.

Each thread has its own database connection; a barrier releases them together, so both
transactions are open at the same moment. Exactly one must win; the other gets a clear message.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from collection.models import ImageEmbedding, Specimen
from identification.models import Submission, SubmissionStatus
from review import services as rs
from review.models import Claim, Proposal, ProposalStatus
from tests.factories import claim_and_review, make_item, make_submission, make_user

# Approvals index the new catalogue images inline: with the fake pipeline, never the real models.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fake_pipeline")]


def race(*calls):
    """Run the calls in threads released together; return [(result, exception)] in call order."""
    barrier = threading.Barrier(len(calls))
    outcomes: list = [None] * len(calls)

    def run(index, call):
        try:
            barrier.wait(timeout=10)
            outcomes[index] = (call(), None)
        except Exception as exc:  # noqa: BLE001 — the outcome is what the test inspects
            outcomes[index] = (None, exc)
        finally:
            connection.close()  # each thread's own connection

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert all(not thread.is_alive() for thread in threads), "a transaction hung"
    return outcomes


def test_two_volunteers_claiming_the_same_submission_exactly_one_wins(volunteer):
    other = make_user("volunteer2")
    for _ in range(4):  # several rounds: a lucky ordering must not hide a race
        submission = make_submission()
        outcomes = race(
            lambda s=submission: rs.submission_claim(submission_id=s.pk, user=volunteer),
            lambda s=submission: rs.submission_claim(submission_id=s.pk, user=other),
        )
        winners = [result for result, error in outcomes if error is None]
        errors = [error for _, error in outcomes if error is not None]
        assert len(winners) == 1 and len(errors) == 1, outcomes
        assert isinstance(errors[0], rs.ReviewConflict)
        assert "Another volunteer is reviewing" in str(errors[0])
        assert Claim.objects.filter(submission=submission, released_at__isnull=True).count() == 1
        assert Claim.objects.get(submission=submission).volunteer == winners[0].volunteer
        assert Submission.objects.get(pk=submission.pk).status == SubmissionStatus.IN_REVIEW


def test_two_volunteers_taking_the_next_get_different_submissions(volunteer):
    other = make_user("volunteer2")
    first, second = make_submission(), make_submission()
    outcomes = race(lambda: rs.queue_next(user=volunteer), lambda: rs.queue_next(user=other))
    assert [error for _, error in outcomes] == [None, None]
    assert {claim.submission_id for claim, _ in outcomes} == {first.pk, second.pk}


def test_two_curators_approving_the_same_proposal_exactly_one_wins(volunteer, curator, mailoutbox):
    other_curator = make_user("curator2", "curator")
    item = make_item()
    submission = make_submission([item])
    claim_and_review(submission, volunteer, item=item)
    claim_and_review(submission, make_user("volunteer2"), item=item)
    proposal = Proposal.objects.get()
    outcomes = race(
        lambda: rs.proposal_approve(proposal_id=proposal.pk, user=curator),
        lambda: rs.proposal_approve(proposal_id=proposal.pk, user=other_curator),
    )
    winners = [result for result, error in outcomes if error is None]
    errors = [error for _, error in outcomes if error is not None]
    assert len(winners) == 1 and len(errors) == 1, outcomes
    assert isinstance(errors[0], rs.ReviewConflict)
    assert "already approved by" in str(errors[0])
    assert Specimen.objects.filter(item=item).count() == 1
    proposal.refresh_from_db()
    assert proposal.status == ProposalStatus.APPROVED and proposal.specimen == winners[0]
    assert len(mailoutbox) == 1  # the requester hears once
    assert ImageEmbedding.objects.filter(image__specimen=winners[0]).count() == 1  # indexed after commit


def test_approve_and_reject_at_once_exactly_one_decides(volunteer, curator):
    other_curator = make_user("curator2", "curator")
    item = make_item()
    submission = make_submission([item])
    claim_and_review(submission, volunteer, item=item)
    claim_and_review(submission, make_user("volunteer2"), item=item)
    proposal = Proposal.objects.get()
    outcomes = race(
        lambda: rs.proposal_approve(proposal_id=proposal.pk, user=curator),
        lambda: rs.proposal_reject(proposal_id=proposal.pk, user=other_curator, reason="Wrong type."),
    )
    assert sum(error is None for _, error in outcomes) == 1, outcomes
    proposal.refresh_from_db()
    status = Submission.objects.get(pk=submission.pk).status
    if proposal.status == ProposalStatus.APPROVED:
        assert status == SubmissionStatus.RESOLVED and Specimen.objects.count() == 1
    else:
        assert status == SubmissionStatus.AWAITING_REVIEW and Specimen.objects.count() == 0
