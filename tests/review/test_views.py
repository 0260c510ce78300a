"""Review pages: queue, comparison page, decisions, proposals, approval, dashboard and history."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from collection.models import Specimen
from identification.models import Submission, SubmissionStatus
from review import selectors
from review import services as rs
from review.models import Claim, Proposal, Review
from tests.factories import claim_and_review, make_image, make_item, make_specimen, make_submission, make_user

# Approvals index the new catalogue images inline: with the fake pipeline, never the real models.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fake_pipeline")]


@pytest.fixture
def volunteer2(db):
    return make_user("volunteer2")


def proposed(volunteer, volunteer2, **kwargs):
    item = make_item()
    submission = make_submission([item], **kwargs)
    claim_and_review(submission, volunteer, item=item)
    claim_and_review(submission, volunteer2, item=item)
    return submission, item, Proposal.objects.get(submission=submission)


class TestQueuePage:
    def test_it_lists_waiting_submissions_oldest_first_with_their_photos(self, client, volunteer):
        newer = make_submission(age=timedelta(hours=1))
        older = make_submission(age=timedelta(hours=3))
        make_submission(status=SubmissionStatus.PROCESSING)
        client.force_login(volunteer)
        response = client.get("/review/")
        html = response.content.decode()
        assert response.status_code == 200
        assert [s.pk for s in response.context["submissions"]] == [older.pk, newer.pk]
        assert html.index(str(older.pk)[:8]) < html.index(str(newer.pk)[:8])
        assert older.images.get().cutout.url in html

    def test_it_filters_by_side_material_and_two_photos(self, client, volunteer):
        make_submission(side="obverse", material="Silver")
        pair = make_submission(two_photos=True, side="reverse", material="Bronze")
        client.force_login(volunteer)
        response = client.get("/review/", {"material": "bronze", "two_photos": "1"})
        assert [s.pk for s in response.context["submissions"]] == [pair.pk]

    def test_its_query_count_does_not_grow_with_the_queue(self, client, volunteer):
        client.force_login(volunteer)
        make_submission(two_photos=True)
        client.get("/review/")  # warm caches (content types, groups)
        with CaptureQueriesContext(connection) as few:
            client.get("/review/")
        for _ in range(6):
            make_submission(two_photos=True)
        with CaptureQueriesContext(connection) as many:
            response = client.get("/review/")
        assert len(response.context["submissions"]) == 7
        assert len(many) == len(few)
        assert len(many) <= 12

    def test_taking_the_next_claims_the_oldest_and_opens_it(self, client, volunteer):
        make_submission(age=timedelta(hours=1))
        older = make_submission(age=timedelta(hours=2))
        client.force_login(volunteer)
        response = client.post("/review/next/")
        assert response.status_code == 302 and response.url == f"/review/{older.pk}/"
        assert Claim.objects.active().get().submission_id == older.pk

    def test_an_empty_queue_says_so(self, client, volunteer):
        client.force_login(volunteer)
        response = client.post("/review/next/", follow=True)
        assert "Nothing is waiting" in response.content.decode()


class TestReviewPage:
    def test_it_shows_the_specimen_beside_the_candidates_with_their_rotation_and_other_specimens(
        self, client, volunteer
    ):
        items = [make_item() for _ in range(8)]
        matched = make_image(make_specimen(items[0]))
        other = make_image(make_specimen(items[0]), side="reverse")
        submission = make_submission(items)
        from identification.models import Candidate

        Candidate.objects.filter(submission=submission, rank=1).update(matched_image=matched, agreement=0.0123)
        client.force_login(volunteer)
        client.post(f"/review/{submission.pk}/claim/")
        response = client.get(f"/review/{submission.pk}/")
        html = response.content.decode()
        assert response.status_code == 200
        data = json.loads(html.split('id="compare-data" type="application/json">')[1].split("</script>")[0])
        assert len(data["candidates"]) == 8
        first = data["candidates"][0]
        assert first["rotation"] == -30.0 and first["item_id"] == items[0].pk
        assert first["agreement"] == 0.012 and data["candidates"][1]["agreement"] == 0.0
        assert [image["id"] for image in first["images"]] == [matched.pk, other.pk]
        assert data["query"][0]["cutout"] == submission.images.get().cutout.url
        assert 'name="decision"' in html and "review/review.js" in html
        assert 'data-rotate="-30.0"' in html

    def test_the_senders_none_match_is_shown_to_the_reviewer(self, client, volunteer):
        from identification import services

        submission = make_submission([make_item()])
        client.force_login(volunteer)
        assert "none of the candidates looks right" not in client.get(f"/review/{submission.pk}/").content.decode()
        services.submission_none_match(submission_id=submission.pk)
        assert "none of the candidates looks right" in client.get(f"/review/{submission.pk}/").content.decode()

    def test_its_query_count_does_not_grow_with_candidates_or_specimens(self, client, volunteer):
        from identification.models import Candidate

        def page_queries(n_items: int) -> int:
            items = [make_item() for _ in range(n_items)]
            for item in items:
                image = make_image(make_specimen(item))
                make_image(make_specimen(item), side="reverse")
            submission = make_submission(items, two_photos=True)
            for candidate in Candidate.objects.filter(submission=submission):
                candidate.matched_image = image
                candidate.save()
            client.post(f"/review/{submission.pk}/claim/")
            client.get(f"/review/{submission.pk}/")  # warm caches
            with CaptureQueriesContext(connection) as queries:
                assert client.get(f"/review/{submission.pk}/").status_code == 200
            return len(queries)

        client.force_login(volunteer)
        assert page_queries(1) == page_queries(8)

    def test_without_a_claim_it_offers_to_claim_and_no_form(self, client, volunteer):
        submission = make_submission([make_item()])
        client.force_login(volunteer)
        html = client.get(f"/review/{submission.pk}/").content.decode()
        assert f"/review/{submission.pk}/claim/" in html
        assert 'name="decision"' not in html

    def test_a_volunteer_records_a_match(self, client, volunteer):
        item = make_item()
        submission = make_submission([item])
        client.force_login(volunteer)
        client.post(f"/review/{submission.pk}/claim/")
        response = client.post(
            f"/review/{submission.pk}/", {"decision": "match", "item_id": item.pk, "comment": "same die"}
        )
        assert response.status_code == 302
        review = Review.objects.get()
        assert (review.reviewer, review.item, review.comment) == (volunteer, item, "same die")

    def test_a_new_item_draft_is_recorded_from_the_form(self, client, volunteer):
        submission = make_submission([make_item()])
        client.force_login(volunteer)
        client.post(f"/review/{submission.pk}/claim/")
        client.post(
            f"/review/{submission.pk}/",
            {"decision": "new_item", "draft_title": "Follis", "draft_mint": "Siscia", "draft_obverse_legend": "IMP"},
        )
        assert Review.objects.get().draft == {"title": "Follis", "mint": "Siscia", "obverse_legend": "IMP"}

    def test_an_incomplete_decision_shows_the_reason_and_keeps_the_claim(self, client, volunteer):
        submission = make_submission([make_item()])
        client.force_login(volunteer)
        client.post(f"/review/{submission.pk}/claim/")
        response = client.post(f"/review/{submission.pk}/", {"decision": "match"})
        assert response.status_code == 400
        assert "Choose the catalogue item" in response.content.decode()
        assert not Review.objects.exists()
        assert Claim.objects.active().filter(submission=submission, volunteer=volunteer).exists()

    def test_save_and_next_opens_the_next_submission(self, client, volunteer):
        item = make_item()
        first = make_submission([item], age=timedelta(hours=2))
        second = make_submission([item], age=timedelta(hours=1))
        client.force_login(volunteer)
        client.post(f"/review/{first.pk}/claim/")
        response = client.post(f"/review/{first.pk}/", {"decision": "unsure", "then": "next"})
        assert response.url == f"/review/{second.pk}/"

    def test_a_claim_held_by_someone_else_sends_you_back_with_a_message(self, client, volunteer, volunteer2):
        submission = make_submission()
        rs.submission_claim(submission_id=submission.pk, user=volunteer2)
        client.force_login(volunteer)
        response = client.post(f"/review/{submission.pk}/claim/", follow=True)
        assert "Another volunteer is reviewing" in response.content.decode()

    def test_the_curators_reason_is_shown_after_a_rejection(self, client, volunteer, volunteer2, curator):
        submission, _, proposal = proposed(volunteer, volunteer2)
        rs.proposal_reject(proposal_id=proposal.pk, user=curator, reason="Wrong mint mark: SIS, not SMN.")
        client.force_login(make_user("volunteer3"))
        html = client.get(f"/review/{submission.pk}/").content.decode()
        assert "Wrong mint mark: SIS, not SMN." in html

    def test_release_gives_it_back(self, client, volunteer):
        submission = make_submission()
        client.force_login(volunteer)
        client.post(f"/review/{submission.pk}/claim/")
        client.post(f"/review/{submission.pk}/release/")
        assert Submission.objects.get(pk=submission.pk).status == SubmissionStatus.AWAITING_REVIEW


class TestProposalPages:
    def test_the_list_shows_pending_proposals(self, client, volunteer, volunteer2, curator):
        _, item, proposal = proposed(volunteer, volunteer2)
        client.force_login(curator)
        html = client.get("/review/proposals/").content.decode()
        assert f"/review/proposals/{proposal.pk}/" in html and str(item) in html

    def test_the_detail_shows_what_approval_will_change(self, client, volunteer, volunteer2, curator):
        submission, item, proposal = proposed(volunteer, volunteer2, two_photos=True)
        client.force_login(curator)
        response = client.get(f"/review/proposals/{proposal.pk}/")
        html = response.content.decode()
        assert "What approval will change" in html
        assert selectors.specimen_record_id(submission) in html
        assert "ranked it <strong>#1</strong>" in html
        assert html.count("cut-out") >= 2
        assert volunteer.username in html and volunteer2.username in html

    def test_approving_publishes_the_specimen_on_the_item_page(self, client, volunteer, volunteer2, curator):
        _, item, proposal = proposed(volunteer, volunteer2)
        client.force_login(curator)
        response = client.post(f"/review/proposals/{proposal.pk}/approve/", follow=True)
        specimen = Specimen.objects.get(item=item)
        assert f"specimen {specimen.record_id} is now in the catalogue" in response.content.decode()
        html = client.get(f"/review/proposals/{proposal.pk}/").content.decode()
        assert "What this proposal changed" in html and specimen.get_absolute_url() in html
        assert "Approve and publish" not in html
        client.logout()
        assert specimen.record_id in client.get(item.get_absolute_url()).content.decode()

    def test_approving_twice_tells_the_second_curator(self, client, volunteer, volunteer2, curator):
        _, _, proposal = proposed(volunteer, volunteer2)
        rs.proposal_approve(proposal_id=proposal.pk, user=make_user("curator2", "curator"))
        client.force_login(curator)
        response = client.post(f"/review/proposals/{proposal.pk}/approve/", follow=True)
        assert "already approved by curator2" in response.content.decode()
        assert Specimen.objects.count() == 1

    def test_rejecting_needs_a_reason(self, client, volunteer, volunteer2, curator):
        _, _, proposal = proposed(volunteer, volunteer2)
        client.force_login(curator)
        response = client.post(f"/review/proposals/{proposal.pk}/reject/", {"reason": ""}, follow=True)
        assert "Say why" in response.content.decode()
        client.post(f"/review/proposals/{proposal.pk}/reject/", {"reason": "Different bust."})
        proposal.refresh_from_db()
        assert (proposal.status, proposal.reason) == ("rejected", "Different bust.")


class TestDashboard:
    def test_it_shows_queue_agreement_and_model_accuracy(self, client, volunteer, volunteer2, curator):
        make_submission(age=timedelta(days=2, hours=3))
        _, _, proposal = proposed(volunteer, volunteer2)
        rs.proposal_approve(proposal_id=proposal.pk, user=curator)
        first, second = make_item(), make_item()
        split = make_submission([first, second])
        claim_and_review(split, volunteer, item=first)
        claim_and_review(split, volunteer2, item=second)
        client.force_login(curator)
        response = client.get("/review/dashboard/")
        stats = response.context["stats"]
        assert stats["queue_length"] == 1
        assert stats["oldest_age"] >= timedelta(days=2, hours=3)
        assert (stats["agreed"], stats["disagreed"]) == (1, 1)
        assert stats["agreement_rate"] == 0.5
        assert (stats["top1"], stats["top8"], stats["accepted_matches"]) == (1, 1, 1)
        assert stats["reviews_per_day"][-1]["count"] == 4
        assert "50%" in response.content.decode()

    def test_the_dashboard_shows_the_catalogues_bulk_work_with_progress_and_time_left(self, client, curator):
        from django.utils import timezone

        from identification.models import BackgroundJob

        BackgroundJob.objects.create(
            kind="index", status="running", total=400, done=100, started_at=timezone.now() - timedelta(minutes=5)
        )
        BackgroundJob.objects.create(kind="index", status="done", total=10, done=10)  # finished: not shown
        client.force_login(curator)
        html = client.get("/review/dashboard/").content.decode()
        assert "Indexing catalogue images" in html and '<progress max="400" value="100">' in html
        assert "100 of 400" in html
        assert "about 15 min" in html or "about 16 min" in html  # 100 in 5 minutes: 300 more take 15 (rounded up)
        assert html.count("<progress") == 1


class TestHistory:
    def test_curators_see_every_step_of_an_items_history(self, client, volunteer, volunteer2, curator):
        _, item, proposal = proposed(volunteer, volunteer2)
        specimen = rs.proposal_approve(proposal_id=proposal.pk, user=curator)
        client.force_login(curator)
        html = client.get(f"/review/history/item/{item.pk}/").content.decode()
        assert "Approved" in html and "Consensus" in html and "Reviewed" in html
        html = client.get(f"/review/history/specimen/{specimen.pk}/").content.decode()
        assert "Approved" in html and specimen.record_id in html
