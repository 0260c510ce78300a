"""The "Identify a specimen" pages: form, example photos, progress, evidence and narrowing."""

from __future__ import annotations

import json
import re
from uuid import uuid4

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from identification import services
from identification.models import Submission, SubmissionStatus
from tests.factories import catalogue_image, make_concept, make_item, pattern_png, two_coins_png

pytestmark = pytest.mark.django_db


def photo(seed: int = 1) -> SimpleUploadedFile:
    return SimpleUploadedFile("coin.png", pattern_png(seed), content_type="image/png")


CONTACT = {"requester_name": "Ada", "requester_email": "a@example.org", "photo_licence": "cc-by-4.0"}


class TestIdentifyForm:
    def test_it_asks_for_both_sides_with_camera_capture_tips_and_consent(self, client):
        response = client.get("/identify/")
        assert response.status_code == 200
        html = response.content.decode()
        assert html.count('capture="environment"') == 2 and 'accept="image/*"' in html
        assert 'name="requester_email"' in html
        assert ">Obverse<" in html and ">Reverse<" in html and "Tips for a good photo" in html
        assert "many coin types share one side" in html  # why the second photo
        assert "May we publish your photos?" in html and 'value="none"' in html and "CC BY 4.0" in html
        assert html.count('class="required"') == 4  # photos, name, email, publication
        assert 'name="idempotency_key"' in html

    def test_a_visitor_submits_and_is_sent_to_the_status_page(self, client):
        data = {"photo_1": photo(), "photo_credit": "Ada L.", **CONTACT}
        response = client.post("/identify/", data)
        submission = Submission.objects.get()
        assert response.status_code == 302 and response["Location"] == submission.get_absolute_url()
        assert (submission.photo_licence, submission.photo_credit) == ("cc-by-4.0", "Ada L.")
        assert submission.images.get().declared_side == "obverse"  # the zone it was dropped in

    def test_every_problem_is_shown_at_once_and_nothing_is_stored(self, client):
        response = client.post("/identify/", {"requester_email": "not-an-address", "idempotency_key": str(uuid4())})
        assert response.status_code == 400
        errors = response.context["errors"]
        assert set(errors) == {"photos", "requester_name", "requester_email", "photo_licence"}
        html = response.content.decode()
        assert "4 things need your attention" in html
        assert "at least 1 photo" in html and "valid email address" in html and "Choose whether your photos" in html
        assert 'value="not-an-address"' in html  # what was typed is kept
        assert Submission.objects.count() == 0

    def test_without_a_script_the_form_says_to_choose_the_photos_again(self, client):
        response = client.post("/identify/", {"photo_1": photo(), "requester_name": "Ada"})
        assert response.status_code == 400
        assert "Please choose your photos again" in response.content.decode()

    def test_missing_contact_details_are_shown_on_the_form(self, client):
        response = client.post("/identify/", {"photo_1": photo(), "photo_licence": "none"})
        assert response.status_code == 400
        assert "email address is required" in response.content.decode()
        assert Submission.objects.count() == 0

    def test_a_logged_in_user_submits_both_sides_without_contact_details(self, client, volunteer):
        client.force_login(volunteer)
        response = client.post("/identify/", {"photo_1": photo(), "photo_2": photo(2), "photo_licence": "none"})
        assert response.status_code == 302
        images = Submission.objects.get().images.order_by("position")
        assert [image.declared_side for image in images] == ["obverse", "reverse"]

    def test_the_sides_are_the_zones_unless_the_sender_is_unsure(self, client):
        client.post("/identify/", {"photo_2": photo(2), **CONTACT})
        client.post("/identify/", {"photo_1": photo(), "photo_2": photo(2), "sides_unsure": "on", **CONTACT})
        only_reverse, unsure = Submission.objects.order_by("created_at")
        assert [image.declared_side for image in only_reverse.images.all()] == ["reverse"]
        assert [image.declared_side for image in unsure.images.all()] == ["unknown", "unknown"]

    def test_sending_the_form_again_after_going_back_makes_no_duplicate(self, client):
        key = str(uuid4())
        first = client.post("/identify/", {"photo_1": photo(), "idempotency_key": key, **CONTACT})
        again = client.post("/identify/", {"photo_1": photo(), "idempotency_key": key, **CONTACT}, follow=True)
        submission = Submission.objects.get()
        assert first["Location"] == again.redirect_chain[0][0] == submission.get_absolute_url()
        assert "You had sent these photos already" in again.content.decode()

    def test_the_key_is_kept_after_an_error_and_new_on_a_new_form(self, client):
        key = str(uuid4())
        html = client.post("/identify/", {"idempotency_key": key}).content.decode()
        assert f'name="idempotency_key" value="{key}"' in html
        assert key not in client.get("/identify/").content.decode()


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
        assert "Your photo" in html and "Cut out and turned upright (30° anticlockwise)" in html
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

    def test_the_score_shown_is_the_one_that_ranks_with_its_parts_on_demand(self, client, fake_pipeline):
        for seed in (8, 9):
            catalogue_image(make_item(), seed=seed, pipeline=fake_pipeline)
        submission = services.submission_create(files=[photo(8)], requester_name="A", requester_email="a@example.org")
        services.submission_process(submission_id=submission.pk)
        first, second = submission.candidates.order_by("rank")
        first.score, first.agreement, second.score, second.agreement = 0.2, 1.29, 0.9, 0.0
        first.save(), second.save()
        html = client.get(submission.get_absolute_url()).content.decode()
        cards = html[html.index('class="candidate-grid"') :]
        scores = re.findall(r'class="score">score ([\d.-]+)<', cards)
        assert scores == ["1.49", "0.90"]  # the totals, in the cards' order
        assert "Image similarity <strong>0.200</strong>, metadata agreement <strong>+1.290</strong>" in html
        assert "Image similarity <strong>0.900</strong>." in html  # no agreement: no part to show
        assert "Likely match:" in html and "(1.49 against 0.90)" in html  # 0.59 ahead: well over the gap
        second.score = 1.45
        second.save()
        html = client.get(submission.get_absolute_url()).content.decode()
        assert "No confident match" in html and "Likely match" not in html  # 0.04 ahead

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

    def test_any_term_of_the_vocabulary_is_offered_not_only_the_candidates(self, client, fake_pipeline):
        hadrian, nero = make_concept("authority", "Hadrian"), make_concept("authority", "Nero")
        catalogue_image(make_item(concepts=[hadrian]), seed=8, pipeline=fake_pipeline)
        make_item(concepts=[nero])  # in the catalogue, without images: never a candidate here
        submission = services.submission_create(files=[photo(8)], requester_name="A", requester_email="a@example.org")
        services.submission_process(submission_id=submission.pk)
        html = client.get(submission.get_absolute_url()).content.decode()
        among = html.index('<optgroup label="Among these candidates">')
        elsewhere = html.index('<optgroup label="Elsewhere in the catalogue">')
        assert among < html.index(f'value="{hadrian.slug}"') < elsewhere < html.index(f'value="{nero.slug}"')
        assert 'name="date_from"' in html and 'name="legend"' in html

    def test_the_status_says_the_step_and_the_place_in_the_queue(self, client):
        ahead = services.submission_create(files=[photo()], requester_name="A", requester_email="a@example.org")
        mine = services.submission_create(files=[photo(2)], requester_name="B", requester_email="b@example.org")
        html = client.get(mine.get_absolute_url()).content.decode()
        assert "Status: <strong data-status-text>Waiting in the queue</strong>" in html
        assert "1 submission ahead of yours in the queue." in html
        Submission.objects.filter(pk=ahead.pk).update(status=SubmissionStatus.PROCESSING, step="classifying")
        assert "Yours is next" not in client.get(mine.get_absolute_url()).content.decode()  # still one ahead
        status = client.get(f"/identify/{ahead.pk}/status.json").json()
        assert status["status_text"] == "Classifying (step 5 of 7)"

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
