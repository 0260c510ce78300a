"""The "Identify a specimen" pages: form, example photos, progress, evidence and narrowing."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from identification import services
from identification.models import Submission, SubmissionStatus
from tests.factories import catalogue_image, make_concept, make_item, pattern_png, two_coins_png

pytestmark = pytest.mark.django_db


def photo(seed: int = 1) -> SimpleUploadedFile:
    return SimpleUploadedFile("coin.png", pattern_png(seed), content_type="image/png")


class TestIdentifyForm:
    def test_it_shows_the_form_with_camera_capture(self, client):
        response = client.get("/identify/")
        assert response.status_code == 200
        html = response.content.decode()
        assert 'capture="environment"' in html and 'accept="image/*"' in html
        assert 'name="requester_email"' in html

    def test_a_visitor_submits_and_is_sent_to_the_status_page(self, client):
        data = {"photo_1": photo(), "side_1": "unknown", "requester_name": "Ada", "requester_email": "a@example.org"}
        response = client.post("/identify/", data)
        submission = Submission.objects.get()
        assert response.status_code == 302 and response["Location"] == submission.get_absolute_url()

    def test_missing_contact_details_are_shown_on_the_form(self, client):
        response = client.post("/identify/", {"photo_1": photo()})
        assert response.status_code == 400
        assert "email address is required" in response.content.decode()
        assert Submission.objects.count() == 0

    def test_a_logged_in_user_submits_without_contact_details(self, client, volunteer):
        client.force_login(volunteer)
        response = client.post("/identify/", {"photo_1": photo(), "photo_2": photo(2), "side_2": "reverse"})
        assert response.status_code == 302
        assert Submission.objects.get().images.count() == 2


class TestExamples:
    @pytest.fixture
    def example(self, settings, tmp_path):
        settings.OBVERSE_DEMO_DIR = tmp_path
        folder = tmp_path / "examples"
        folder.mkdir()
        Image.new("RGB", (64, 64), "peru").save(folder / "example-01-DEMO.1.obv.jpg")
        (folder / "examples.json").write_text(
            json.dumps([{"file": "example-01-DEMO.1.obv.jpg", "record_id": "DEMO-1", "side": "obverse"}])
        )
        return "example-01-demo1obv"  # record ids carry dots; URL keys are slugs

    def test_the_library_is_listed_and_an_example_can_be_submitted(self, client, example):
        html = client.get("/identify/").content.decode()
        assert "Obverse of DEMO-1" in html
        assert client.get(f"/identify/examples/{example}/image").status_code == 200
        response = client.post(f"/identify/examples/{example}/")
        submission = Submission.objects.get()
        assert response.status_code == 302 and submission.notes.startswith("Example photo")

    def test_an_unknown_example_is_404(self, client, example):
        assert client.post("/identify/examples/nope/").status_code == 404
        assert not Submission.objects.exists()


class TestSubmissionPages:
    def test_progress_is_shown_while_processing_and_as_json(self, client):
        submission = services.submission_create(files=[photo()], requester_name="A", requester_email="a@example.org")
        Submission.objects.filter(pk=submission.pk).update(status=SubmissionStatus.PROCESSING, step="turning_upright")
        html = client.get(submission.get_absolute_url()).content.decode()
        assert 'class="step current">Turning upright' in html
        assert 'class="step done">Removing background' in html
        status = client.get(f"/identify/{submission.pk}/status.json").json()
        assert status["finished"] is False and status["step"] == "turning_upright"

    def test_the_evidence_page_shows_photos_predictions_and_candidates(self, client, fake_pipeline):
        gold = make_concept("material", "Gold")
        item = make_item(concepts=[gold], reference="RIC IX 8B")
        catalogue_image(item, seed=5, pipeline=fake_pipeline)
        submission = services.submission_create(files=[photo(5)], requester_name="A", requester_email="a@example.org")
        services.submission_process(submission_id=submission.pk)
        html = client.get(submission.get_absolute_url()).content.decode()
        assert "Your photo" in html and "Cut-out" in html
        assert "RIC IX 8B" in html and item.get_absolute_url() in html
        assert 'data-rotate="-30.0"' in html  # the catalogue image turned to the query's orientation
        assert "None of these look right?" in html
        assert "a@example.org" not in html
        assert '<span title="Material">Gold</span>' in html  # the candidate's key metadata

    def test_the_evidence_page_reads_candidates_in_a_fixed_number_of_queries(
        self, client, fake_pipeline, django_assert_max_num_queries
    ):
        gold = make_concept("material", "Gold")
        for seed in range(20, 28):
            item = make_item(concepts=[gold, make_concept("mint", f"Mint {seed}")])
            catalogue_image(item, seed, pipeline=fake_pipeline)
        submission = services.submission_create(files=[photo(20)], requester_name="A", requester_email="a@example.org")
        services.submission_process(submission_id=submission.pk)
        assert submission.candidates.count() == 8
        with django_assert_max_num_queries(12):  # not one per candidate
            html = client.get(submission.get_absolute_url()).content.decode()
        assert html.count('<span title="Mint">') == 8

    def test_a_candidate_moved_by_its_metadata_shows_by_how_much(self, client, fake_pipeline):
        for seed in (8, 9):
            catalogue_image(make_item(), seed=seed, pipeline=fake_pipeline)
        submission = services.submission_create(files=[photo(8)], requester_name="A", requester_email="a@example.org")
        services.submission_process(submission_id=submission.pk)
        first, second = submission.candidates.order_by("rank")
        first.agreement, second.agreement = 0.0123, 0.0
        first.save(), second.save()
        html = client.get(submission.get_absolute_url()).content.decode()
        assert html.count("metadata agreement") == 1 and "metadata agreement +0.012" in html

    def test_a_failed_submission_shows_the_reason(self, client):
        submission = services.submission_create(files=[photo()], requester_name="A", requester_email="a@example.org")
        services.submission_fail(submission_id=submission.pk, reason="No coin found in the photo.")
        html = client.get(submission.get_absolute_url()).content.decode()
        assert "No coin found in the photo." in html

    def test_candidates_can_be_narrowed_and_recomputed(self, client, fake_pipeline):
        gold, silver = make_concept("material", "Gold"), make_concept("material", "Silver")
        gold_item, silver_item = make_item(concepts=[gold]), make_item(concepts=[silver])
        catalogue_image(gold_item, seed=6, pipeline=fake_pipeline)
        catalogue_image(silver_item, seed=7, pipeline=fake_pipeline)
        submission = services.submission_create(files=[photo(6)], requester_name="A", requester_email="a@example.org")
        services.submission_process(submission_id=submission.pk)
        html = client.get(submission.get_absolute_url()).content.decode()
        assert f'value="{silver.slug}"' in html
        response = client.post(f"/identify/{submission.pk}/recompute/", {"material": silver.slug})
        assert response.status_code == 302
        assert list(submission.candidates.values_list("item_id", flat=True)) == [silver_item.pk]

    def test_candidates_can_be_narrowed_by_region_from_the_page(self, client, fake_pipeline):
        asia, gaul = make_concept("region", "Asia"), make_concept("region", "Gaul")
        asian, gallic = make_item(concepts=[asia]), make_item(concepts=[gaul])
        catalogue_image(asian, seed=8, pipeline=fake_pipeline)
        catalogue_image(gallic, seed=9, pipeline=fake_pipeline)
        submission = services.submission_create(files=[photo(8)], requester_name="A", requester_email="a@example.org")
        services.submission_process(submission_id=submission.pk)
        html = client.get(submission.get_absolute_url()).content.decode()
        assert '<select name="region">' in html and f'value="{gaul.slug}"' in html
        response = client.post(f"/identify/{submission.pk}/recompute/", {"region": gaul.slug})
        assert response.status_code == 302
        submission.refresh_from_db()
        assert submission.filters == {"region": gaul.slug}
        assert list(submission.candidates.values_list("item_id", flat=True)) == [gallic.pk]

    def test_when_the_photos_index_was_replaced_narrowing_sends_them_back_to_the_worker(
        self, client, fake_pipeline, django_capture_on_commit_callbacks
    ):
        from collection.models import ImageEmbedding

        catalogue_image(make_item(), seed=10, pipeline=fake_pipeline)
        submission = services.submission_create(files=[photo(10)], requester_name="A", requester_email="a@example.org")
        services.submission_process(submission_id=submission.pk)
        ImageEmbedding.objects.update(model_version="2")  # a retraining re-indexed and pruned version 1
        fake_pipeline.embedder.version = "2"
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            response = client.post(f"/identify/{submission.pk}/recompute/", {"material": ""}, follow=True)
        assert "described again with the current model" in response.content.decode()
        submission.refresh_from_db()
        assert submission.status == SubmissionStatus.RECEIVED and len(callbacks) == 1

    def test_a_photo_of_two_coins_shows_both_and_lets_the_user_pick_the_other(
        self, client, fake_pipeline, django_capture_on_commit_callbacks
    ):
        pipeline = fake_pipeline
        pipeline.objects = 2
        upload = SimpleUploadedFile("coins.png", two_coins_png(3, 4), content_type="image/png")
        submission = services.submission_create(files=[upload], requester_name="A", requester_email="a@example.org")
        services.submission_process(submission_id=submission.pk)
        html = client.get(submission.get_absolute_url()).content.decode()
        assert "We found 2 objects in this photo" in html and "(number 1)" in html
        # The photo is stored as received (240 × 120): the boxes are drawn in its pixels.
        assert 'viewBox="0 0 240 120"' in html
        assert '<rect class="object chosen" x="0" y="0" width="120" height="120"/>' in html
        assert '<rect class="object" x="120" y="0" width="120" height="120"/>' in html
        assert 'name="index" value="1"' in html and 'name="index" value="0"' not in html
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(f"/identify/{submission.pk}/object/", {"position": 0, "index": 1}, follow=True)
        assert response.redirect_chain[-1][0] == submission.get_absolute_url()
        assert "Object 2 it is" in response.content.decode()
        assert pipeline.choices[-1] == 1
        assert '<rect class="object chosen" x="120"' in client.get(submission.get_absolute_url()).content.decode()

    def test_a_bad_pick_is_explained_not_a_server_error(self, client, fake_pipeline):
        submission = services.submission_create(files=[photo()], requester_name="A", requester_email="a@example.org")
        services.submission_process(submission_id=submission.pk)
        for data, message in (({"position": 0, "index": 5}, "No such object"), ({"index": "x"}, "Pick one")):
            response = client.post(f"/identify/{submission.pk}/object/", data, follow=True)
            assert response.status_code == 200 and message in response.content.decode()
        assert client.post("/identify/00000000-0000-0000-0000-000000000000/object/", {}).status_code == 404
        assert "We found" not in client.get(submission.get_absolute_url()).content.decode()  # one object: no map

    def test_no_candidates_says_why(self, client, fake_pipeline):
        submission = services.submission_create(files=[photo()], requester_name="A", requester_email="a@example.org")
        services.submission_process(submission_id=submission.pk)  # an empty catalogue
        html = client.get(submission.get_absolute_url()).content.decode()
        assert "No candidates" in html and "nothing to compare your photo with" in html
        Submission.objects.filter(pk=submission.pk).update(filters={"material": "gold"})
        html = client.get(submission.get_absolute_url()).content.decode()
        assert "No catalogue item matches these filters" in html

    def test_the_sender_can_tell_the_reviewers_none_of_these_look_right(self, client, fake_pipeline):
        catalogue_image(make_item(), seed=30, pipeline=fake_pipeline)
        submission = services.submission_create(files=[photo(31)], requester_name="A", requester_email="a@example.org")
        services.submission_process(submission_id=submission.pk)
        assert (
            "Tell the reviewers none of these look right" in client.get(submission.get_absolute_url()).content.decode()
        )
        response = client.post(f"/identify/{submission.pk}/none-match/", follow=True)
        html = response.content.decode()
        assert "the reviewers will see that none of these look right" in html
        assert "You told the reviewers" in html and "Tell the reviewers none" not in html
        submission.refresh_from_db()
        assert submission.none_match_at is not None

    def test_an_unknown_submission_is_404(self, client):
        response = client.get("/identify/00000000-0000-0000-0000-000000000000/")
        assert response.status_code == 404 and "Not found" in response.content.decode()
