"""review.emails: what the requester is told, and when nothing is sent."""

from __future__ import annotations

import pytest
from django.core import mail

from review import emails
from review import services as rs
from review.models import Proposal
from tests.factories import claim_and_review, make_item, make_submission, make_user

# Approvals index the new catalogue images inline: with the fake pipeline, never the real models.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fake_pipeline")]


def approved(volunteer, curator, *, email="ada@example.org", draft=None):
    item = make_item(title="Follis, Constantinople")
    submission = make_submission([item], email=email)
    for reviewer in (volunteer, make_user("volunteer2")):
        if draft:
            claim_and_review(submission, reviewer, "new_item", draft=draft)
        else:
            claim_and_review(submission, reviewer, item=item)
    proposal = Proposal.objects.get()
    rs.proposal_approve(proposal_id=proposal.pk, user=curator)
    proposal.refresh_from_db()
    mail.outbox.clear()
    return submission, item, proposal


def test_an_approved_match_names_the_item_and_links_the_new_specimen(settings, volunteer, curator):
    settings.OBVERSE_SITE_URL = "https://coins.example.org/"
    submission, item, proposal = approved(volunteer, curator)
    assert emails.requester_notify(submission_id=submission.pk, kind="approved", proposal_id=proposal.pk)
    message = mail.outbox[0]
    assert message.to == ["ada@example.org"]
    assert message.subject == f"Your coin is identified: {item}"
    assert "Hello Ada" in message.body
    assert f"https://coins.example.org{proposal.specimen.get_absolute_url()}" in message.body
    assert f"https://coins.example.org{item.get_absolute_url()}" in message.body
    assert "&amp;" not in message.body and "&#x27;" not in message.body  # plain text, not HTML-escaped


def test_a_new_item_says_it_was_drafted(volunteer, curator):
    submission, _, proposal = approved(volunteer, curator, draft={"title": "Follis of Licinius & sons"})
    emails.requester_notify(submission_id=submission.pk, kind="approved", proposal_id=proposal.pk)
    body = mail.outbox[0].body
    assert "new catalogue entry has been drafted" in body
    assert "Follis of Licinius & sons" in mail.outbox[0].subject


def test_not_identifiable_suggests_better_photos(volunteer):
    submission = make_submission()
    assert emails.requester_notify(submission_id=submission.pk, kind="not_identifiable")
    assert "do not show enough" in mail.outbox[0].body
    assert mail.outbox[0].subject == "About the coin you sent us"


def test_a_logged_in_submitter_is_written_to_at_their_account_address(volunteer):
    submission = make_submission(email="")
    submission.submitted_by = make_user("sender", group=None, email="sender@example.org")
    submission.save()
    emails.requester_notify(submission_id=submission.pk, kind="not_identifiable")
    assert mail.outbox[0].to == ["sender@example.org"]


def test_nothing_is_sent_without_an_address(volunteer):
    submission = make_submission(email="")
    assert not emails.requester_notify(submission_id=submission.pk, kind="not_identifiable")
    assert mail.outbox == []


def test_a_mail_server_failure_does_not_raise(monkeypatch, volunteer):
    def broken(**kwargs):
        raise ConnectionRefusedError("smtp down")

    monkeypatch.setattr(emails, "send_mail", broken)
    submission = make_submission()
    assert not emails.requester_notify(submission_id=submission.pk, kind="not_identifiable")
