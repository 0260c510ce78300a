"""review.services: claims, reviews, consensus, approval and rejection."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from PIL import Image

from collection.models import ImageEmbedding, Item, ItemStatus, Specimen, SpecimenImage
from identification import indexing, services
from identification.models import Candidate, Submission, SubmissionStatus
from review import selectors
from review import services as rs
from review.models import Claim, Proposal, ProposalKind, ProposalStatus, Review, ReviewEvent
from tests.factories import claim_and_review, make_concept, make_item, make_submission, make_user, pattern_png

# Approvals index the new catalogue images inline: with the fake pipeline, never the real models.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fake_pipeline")]


@pytest.fixture
def volunteer2(db) -> User:
    return make_user("volunteer2")


@pytest.fixture
def volunteer3(db) -> User:
    return make_user("volunteer3")


def status_of(submission) -> str:
    return Submission.objects.values_list("status", flat=True).get(pk=submission.pk)


class TestSubmissionClaim:
    def test_it_moves_the_submission_into_review_with_a_lease(self, volunteer):
        submission = make_submission()
        claim = rs.submission_claim(submission_id=submission.pk, user=volunteer)
        assert status_of(submission) == SubmissionStatus.IN_REVIEW
        assert claim.volunteer == volunteer and claim.is_active
        assert claim.expires_at > timezone.now() + timedelta(minutes=29)
        assert ReviewEvent.objects.filter(submission=submission, action="claimed", actor=volunteer).exists()

    def test_a_second_volunteer_cannot_claim_a_claimed_submission(self, volunteer, volunteer2):
        submission = make_submission()
        rs.submission_claim(submission_id=submission.pk, user=volunteer)
        with pytest.raises(rs.ReviewConflict, match="Another volunteer"):
            rs.submission_claim(submission_id=submission.pk, user=volunteer2)
        assert Claim.objects.filter(submission=submission).count() == 1

    def test_claiming_again_extends_ones_own_claim(self, volunteer):
        submission = make_submission()
        first = rs.submission_claim(submission_id=submission.pk, user=volunteer)
        Claim.objects.filter(pk=first.pk).update(expires_at=timezone.now() + timedelta(minutes=1))
        again = rs.submission_claim(submission_id=submission.pk, user=volunteer)
        assert again.pk == first.pk
        assert again.expires_at > timezone.now() + timedelta(minutes=29)

    def test_expired_claims_return_the_submission_to_the_queue(self, volunteer, volunteer2):
        submission = make_submission()
        claim = rs.submission_claim(submission_id=submission.pk, user=volunteer)
        Claim.objects.filter(pk=claim.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
        assert rs.claims_release_expired() == 1
        assert status_of(submission) == SubmissionStatus.AWAITING_REVIEW
        taken = rs.submission_claim(submission_id=submission.pk, user=volunteer2)
        assert taken.volunteer == volunteer2
        assert ReviewEvent.objects.filter(submission=submission, action="expired").count() == 1

    def test_a_volunteer_cannot_claim_what_they_already_reviewed(self, volunteer):
        item = make_item()
        submission = make_submission([item])
        claim_and_review(submission, volunteer, item=item)
        assert status_of(submission) == SubmissionStatus.AWAITING_REVIEW
        with pytest.raises(rs.ReviewConflict, match="already reviewed"):
            rs.submission_claim(submission_id=submission.pk, user=volunteer)

    @pytest.mark.parametrize("status", [SubmissionStatus.PROCESSING, SubmissionStatus.PROPOSED, "resolved", "failed"])
    def test_only_submissions_awaiting_review_can_be_claimed(self, volunteer, status):
        submission = make_submission(status=status)
        with pytest.raises(rs.ReviewConflict):
            rs.submission_claim(submission_id=submission.pk, user=volunteer)
        assert status_of(submission) == status

    def test_escalated_submissions_are_for_curators(self, volunteer, curator):
        submission = make_submission(status=SubmissionStatus.NEEDS_EXPERT)
        with pytest.raises(rs.ReviewConflict):
            rs.submission_claim(submission_id=submission.pk, user=volunteer)
        rs.submission_claim(submission_id=submission.pk, user=curator)
        assert status_of(submission) == SubmissionStatus.IN_REVIEW

    def test_releasing_returns_it_to_where_it_was(self, volunteer, curator):
        waiting = make_submission()
        escalated = make_submission(status=SubmissionStatus.NEEDS_EXPERT)
        rs.submission_claim(submission_id=waiting.pk, user=volunteer)
        rs.submission_claim(submission_id=escalated.pk, user=curator)
        assert rs.claim_release(submission_id=waiting.pk, user=volunteer)
        assert rs.claim_release(submission_id=escalated.pk, user=curator)
        assert status_of(waiting) == SubmissionStatus.AWAITING_REVIEW
        assert status_of(escalated) == SubmissionStatus.NEEDS_EXPERT
        assert not rs.claim_release(submission_id=waiting.pk, user=volunteer)

    def test_a_user_without_the_role_cannot_claim(self, db):
        outsider = make_user("outsider", group=None)
        submission = make_submission()
        with pytest.raises(PermissionDenied):
            rs.submission_claim(submission_id=submission.pk, user=outsider)
        assert status_of(submission) == SubmissionStatus.AWAITING_REVIEW


class TestQueue:
    def test_it_offers_the_oldest_first_and_skips_what_others_hold(self, volunteer, volunteer2):
        newer = make_submission(age=timedelta(hours=1))
        older = make_submission(age=timedelta(hours=5))
        make_submission(status=SubmissionStatus.PROCESSING, age=timedelta(hours=9))
        assert list(selectors.queue_submissions(user=volunteer)) == [older, newer]
        first = rs.queue_next(user=volunteer)
        second = rs.queue_next(user=volunteer2)
        assert first.submission_id == older.pk
        assert second.submission_id == newer.pk
        assert rs.queue_next(user=make_user("volunteer3")) is None

    def test_filters_by_side_material_and_two_photos(self, volunteer):
        obverse = make_submission(side="obverse", material="Silver")
        reverse = make_submission(side="reverse", material="Bronze")
        pair = make_submission(two_photos=True, material="Bronze")
        queue = selectors.queue_submissions
        assert set(queue(user=volunteer, filters=selectors.QueueFilters(side="obverse"))) == {obverse, pair}
        assert set(queue(user=volunteer, filters=selectors.QueueFilters(side="reverse"))) == {reverse, pair}
        assert set(queue(user=volunteer, filters=selectors.QueueFilters(material="silver"))) == {obverse}
        assert list(queue(user=volunteer, filters=selectors.QueueFilters(two_photos=True))) == [pair]

    def test_a_volunteers_reviewed_submissions_leave_their_queue_only(self, volunteer, volunteer2):
        item = make_item()
        submission = make_submission([item])
        claim_and_review(submission, volunteer, item=item)
        assert submission not in selectors.queue_submissions(user=volunteer)
        assert submission in selectors.queue_submissions(user=volunteer2)


class TestReviewSubmit:
    def test_it_records_the_decision_and_what_was_shown(self, volunteer):
        items = [make_item() for _ in range(3)]
        submission = make_submission(items)
        review = claim_and_review(submission, volunteer, item=items[1], comment=" same bust ")
        assert review.decision == "match" and review.item == items[1]
        assert review.comment == "same bust"
        assert [c["item_id"] for c in review.candidates_shown] == [i.pk for i in items]
        assert review.candidates_shown[0]["rank"] == 1
        assert review.model_versions == {"embedding": "fake-pixels@1"}
        assert not Claim.objects.active().filter(submission=submission).exists()

    def test_it_needs_a_live_claim(self, volunteer):
        item = make_item()
        submission = make_submission([item])
        with pytest.raises(rs.ReviewConflict, match="claim"):
            rs.review_submit(submission_id=submission.pk, user=volunteer, decision="match", item_id=item.pk)
        claim = rs.submission_claim(submission_id=submission.pk, user=volunteer)
        Claim.objects.filter(pk=claim.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
        with pytest.raises(rs.ReviewConflict, match="expired"):
            rs.review_submit(submission_id=submission.pk, user=volunteer, decision="match", item_id=item.pk)
        assert not Review.objects.exists()

    @pytest.mark.parametrize(
        ("decision", "kwargs", "field"),
        [
            ("match", {}, "item"),
            ("match", {"item_id": 999999}, "item"),
            ("new_item", {"draft": {"mint": ""}}, "draft"),
            ("new_item", {"draft": {"title": "X", "date_from": "soon"}}, "date_from"),
            ("maybe", {}, "decision"),
        ],
    )
    def test_it_rejects_incomplete_decisions(self, volunteer, decision, kwargs, field):
        submission = make_submission()
        rs.submission_claim(submission_id=submission.pk, user=volunteer)
        with pytest.raises(ValidationError) as excinfo:
            rs.review_submit(submission_id=submission.pk, user=volunteer, decision=decision, **kwargs)
        assert field in excinfo.value.message_dict
        assert not Review.objects.exists()
        assert status_of(submission) == SubmissionStatus.IN_REVIEW


class TestConsensus:
    def test_two_volunteers_agreeing_on_an_item_make_an_attach_proposal(self, volunteer, volunteer2):
        item, other = make_item(), make_item()
        submission = make_submission([other, item])
        claim_and_review(submission, volunteer, item=item)
        assert status_of(submission) == SubmissionStatus.AWAITING_REVIEW
        assert not Proposal.objects.exists()
        claim_and_review(submission, volunteer2, item=item)
        proposal = Proposal.objects.get()
        assert (proposal.kind, proposal.item, proposal.status) == (ProposalKind.ATTACH, item, ProposalStatus.PENDING)
        assert proposal.reviews.count() == 2
        assert status_of(submission) == SubmissionStatus.PROPOSED

    def test_the_consensus_size_is_a_setting(self, settings, volunteer, volunteer2, volunteer3):
        settings.OBVERSE_REVIEW_CONSENSUS = 3
        item = make_item()
        submission = make_submission([item])
        claim_and_review(submission, volunteer, item=item)
        claim_and_review(submission, volunteer2, item=item)
        assert not Proposal.objects.exists()
        claim_and_review(submission, volunteer3, item=item)
        assert Proposal.objects.get().reviews.count() == 3

    def test_agreeing_on_a_new_item_makes_a_new_item_proposal_with_the_draft(self, volunteer, volunteer2):
        submission = make_submission([make_item()])
        draft = {"title": "Follis of Licinius", "authority": "Licinius I", "mint": "Heraclea", "date_from": "313"}
        claim_and_review(submission, volunteer, "new_item", draft=draft)
        claim_and_review(submission, volunteer2, "new_item", draft={"title": "Licinius follis"})
        proposal = Proposal.objects.get()
        assert proposal.kind == ProposalKind.NEW_ITEM and proposal.item is None
        assert proposal.draft["authority"] == "Licinius I" and proposal.draft["date_from"] == 313

    def test_disagreement_escalates_to_an_expert(self, volunteer, volunteer2):
        first, second = make_item(), make_item()
        submission = make_submission([first, second])
        claim_and_review(submission, volunteer, item=first)
        claim_and_review(submission, volunteer2, item=second)
        assert status_of(submission) == SubmissionStatus.NEEDS_EXPERT
        assert not Proposal.objects.exists()
        assert ReviewEvent.objects.get(submission=submission, action="escalated").detail == "Reviewers disagreed."

    def test_unsure_escalates_at_once(self, volunteer):
        submission = make_submission([make_item()])
        claim_and_review(submission, volunteer, "unsure", comment="worn reverse")
        assert status_of(submission) == SubmissionStatus.NEEDS_EXPERT

    def test_a_curator_decides_an_escalated_submission_alone(self, volunteer, volunteer2, curator):
        first, second = make_item(), make_item()
        submission = make_submission([first, second])
        claim_and_review(submission, volunteer, item=first)
        claim_and_review(submission, volunteer2, item=second)
        claim_and_review(submission, curator, item=second)
        proposal = Proposal.objects.get()
        assert proposal.item == second and list(proposal.reviews.all()) == [Review.objects.get(reviewer=curator)]
        assert status_of(submission) == SubmissionStatus.PROPOSED

    def test_a_curator_closes_an_unidentifiable_submission_and_the_requester_is_told(
        self, volunteer, curator, mailoutbox, django_capture_on_commit_callbacks
    ):
        submission = make_submission([make_item()])
        claim_and_review(submission, volunteer, "unsure")
        with django_capture_on_commit_callbacks(execute=True):
            claim_and_review(submission, curator, "not_identifiable")
        assert status_of(submission) == SubmissionStatus.RESOLVED
        assert len(mailoutbox) == 1 and "do not show enough" in mailoutbox[0].body


class TestProposalApprove:
    def _proposed(self, volunteer, volunteer2, **kwargs):
        item = make_item()
        submission = make_submission([item], **kwargs)
        claim_and_review(submission, volunteer, item=item)
        claim_and_review(submission, volunteer2, item=item)
        return submission, item, Proposal.objects.get(submission=submission)

    def test_it_adds_a_public_specimen_with_the_photos_to_the_item(self, volunteer, volunteer2, curator):
        submission, item, proposal = self._proposed(volunteer, volunteer2, two_photos=True)
        specimen = rs.proposal_approve(proposal_id=proposal.pk, user=curator)
        assert specimen.item == item and specimen.is_public
        assert specimen.record_id == f"OBV-{str(submission.pk).replace('-', '')[:8].upper()}"
        images = list(specimen.images.order_by("side"))
        assert [image.side for image in images] == ["obverse", "reverse"]
        assert all(image.image and image.cutout and image.sha256 for image in images)
        assert images[0].image.read() == submission.images.get(position=0).original.read()
        assert all(image.tiles for image in images)  # IIIF tiles, as an import cuts them: the manifest works
        proposal.refresh_from_db()
        assert (proposal.status, proposal.decided_by, proposal.specimen) == ("approved", curator, specimen)
        assert status_of(submission) == SubmissionStatus.RESOLVED
        event = ReviewEvent.objects.get(action="approved")
        assert (event.actor, event.item, event.specimen) == (curator, item, specimen)

    def test_the_catalogue_gets_the_upright_photo_when_the_pipeline_made_one(self, volunteer, volunteer2, curator):
        submission, _, proposal = self._proposed(volunteer, volunteer2)
        photo = submission.images.get()
        photo.upright.save("0-upright.jpg", ContentFile(pattern_png(99)), save=True)
        specimen = rs.proposal_approve(proposal_id=proposal.pk, user=curator)
        image = specimen.images.get()
        assert image.image.read() == pattern_png(99)
        assert not image.cutout  # the indexer cuts out the upright photo itself

    def test_a_new_item_proposal_creates_a_draft_item_linked_to_known_concepts(self, volunteer, volunteer2, curator):
        licinius = make_concept("authority", "Licinius I")
        submission = make_submission()
        draft = {"title": "Follis of Licinius", "authority": "licinius i", "obverse_legend": "IMP LICINIVS"}
        claim_and_review(submission, volunteer, "new_item", draft=draft)
        claim_and_review(submission, volunteer2, "new_item", draft=draft)
        specimen = rs.proposal_approve(proposal_id=Proposal.objects.get().pk, user=curator)
        item = specimen.item
        assert item.status == ItemStatus.DRAFT
        assert (item.title, item.obverse_legend) == ("Follis of Licinius", "IMP LICINIVS")
        assert list(item.concepts.all()) == [licinius]
        assert Proposal.objects.get().created_item == item

    def test_it_emails_the_requester_after_commit(
        self, volunteer, volunteer2, curator, mailoutbox, django_capture_on_commit_callbacks
    ):
        submission, item, proposal = self._proposed(volunteer, volunteer2)
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            specimen = rs.proposal_approve(proposal_id=proposal.pk, user=curator)
        assert mailoutbox == []
        for callback in callbacks:
            callback()
        assert len(mailoutbox) == 1
        assert mailoutbox[0].to == ["ada@example.org"]
        assert specimen.record_id in mailoutbox[0].body and str(item) in mailoutbox[0].subject

    def test_it_queues_the_new_images_for_indexing(self, volunteer, volunteer2, curator, monkeypatch):
        indexed: list[int] = []
        monkeypatch.setattr(rs, "index_job_start", lambda *, image_ids: indexed.extend(image_ids))
        _, _, proposal = self._proposed(volunteer, volunteer2, two_photos=True)
        specimen = rs.proposal_approve(proposal_id=proposal.pk, user=curator)
        assert sorted(indexed) == sorted(specimen.images.values_list("pk", flat=True))

    def test_a_decided_proposal_cannot_be_approved_again(self, volunteer, volunteer2, curator):
        _, _, proposal = self._proposed(volunteer, volunteer2)
        rs.proposal_approve(proposal_id=proposal.pk, user=curator)
        with pytest.raises(rs.ReviewConflict, match="already approved by curator"):
            rs.proposal_approve(proposal_id=proposal.pk, user=curator)
        assert Specimen.objects.count() == 1

    def test_volunteers_cannot_approve_and_nothing_changes(self, volunteer, volunteer2):
        submission, _, proposal = self._proposed(volunteer, volunteer2)
        with pytest.raises(PermissionDenied):
            rs.proposal_approve(proposal_id=proposal.pk, user=volunteer)
        assert Specimen.objects.count() == 0 and SpecimenImage.objects.count() == 0
        assert Proposal.objects.get().status == ProposalStatus.PENDING
        assert status_of(submission) == SubmissionStatus.PROPOSED


class TestProposalReject:
    def test_it_returns_the_submission_to_a_new_round_with_the_reason(self, volunteer, volunteer2, curator):
        item, right = make_item(), make_item()
        submission = make_submission([item, right])
        claim_and_review(submission, volunteer, item=item)
        claim_and_review(submission, volunteer2, item=item)
        proposal = Proposal.objects.get()
        rs.proposal_reject(proposal_id=proposal.pk, user=curator, reason="Legend ends in AVG, not AVGG.")
        proposal.refresh_from_db()
        assert (proposal.status, proposal.reason) == ("rejected", "Legend ends in AVG, not AVGG.")
        assert status_of(submission) == SubmissionStatus.AWAITING_REVIEW
        assert Specimen.objects.count() == 0
        # A new round: the same volunteers may look again, and their old reviews no longer count.
        assert submission in selectors.queue_submissions(user=volunteer)
        claim_and_review(submission, volunteer, item=right)
        assert status_of(submission) == SubmissionStatus.AWAITING_REVIEW
        claim_and_review(submission, volunteer2, item=right)
        assert Proposal.objects.get(status="pending").item == right

    def test_it_needs_a_reason(self, volunteer, volunteer2, curator):
        item = make_item()
        submission = make_submission([item])
        claim_and_review(submission, volunteer, item=item)
        claim_and_review(submission, volunteer2, item=item)
        with pytest.raises(ValidationError):
            rs.proposal_reject(proposal_id=Proposal.objects.get().pk, user=curator, reason="  ")
        assert Proposal.objects.get().status == ProposalStatus.PENDING


def test_the_whole_loop_with_the_pipeline_indexes_the_new_specimen(
    fake_pipeline, volunteer, curator, volunteer2, django_capture_on_commit_callbacks
):
    """Submit → process (fake pipeline) → two matching reviews → approve → the new images are searchable."""
    pipeline = fake_pipeline
    # mlcore.imageio opens with formats=(…"MPO"…), which Pillow knows only once every plugin is
    # registered; another test may have done that first (reported to the lead).
    Image.init()
    items = [make_item() for _ in range(3)]
    for seed, item in enumerate(items, start=40):
        specimen = Specimen.objects.create(record_id=f"CAT.{seed}", item=item)
        image = SpecimenImage(specimen=specimen, side="obverse", sha256=str(seed))
        image.image.save(f"{seed}.png", ContentFile(pattern_png(seed)), save=True)
        indexing.catalogue_image_index(image_id=image.pk, pipeline=pipeline)
    upload = SimpleUploadedFile("coin.png", pattern_png(41), content_type="image/png")
    submission = services.submission_create(files=[upload], requester_name="Ada", requester_email="a@example.org")
    services.submission_process(submission_id=submission.pk)
    best = Candidate.objects.get(submission=submission, rank=1).item
    assert best == items[1]
    claim_and_review(submission, volunteer, item=best)
    claim_and_review(submission, volunteer2, item=best)
    with django_capture_on_commit_callbacks(execute=True):  # the queue runs tasks inline in tests
        specimen = rs.proposal_approve(proposal_id=Proposal.objects.get().pk, user=curator)
    assert ImageEmbedding.objects.filter(image__specimen=specimen, item=best).count() == 1
    assert Item.objects.get(pk=best.pk).specimens.count() == 2


class TestReleaseExpiredClaimsCommand:
    def test_it_returns_abandoned_submissions_to_the_queue(self, volunteer):
        from io import StringIO

        from django.core.management import call_command

        submission = make_submission()
        claim = rs.submission_claim(submission_id=submission.pk, user=volunteer)
        Claim.objects.filter(pk=claim.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
        out = StringIO()
        call_command("release_expired_claims", stdout=out)
        assert "released 1 expired claim" in out.getvalue()
        assert status_of(submission) == SubmissionStatus.AWAITING_REVIEW
