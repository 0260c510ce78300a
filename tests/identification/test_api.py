"""API v1 submissions: the contract partner institutions rely on."""

from __future__ import annotations

import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from identification.models import Submission
from tests.factories import catalogue_image, make_concept, make_item, pattern_png, two_coins_png
from tests.fakes import FakePipeline

pytestmark = pytest.mark.django_db


@pytest.fixture
def client():
    return APIClient()


def photo(seed: int = 1, name: str = "coin.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, pattern_png(seed), content_type="image/png")


def post(client, **data):
    payload = {"requester_name": "Ada", "requester_email": "ada@example.org", "images": [photo()], **data}
    return client.post("/api/v1/submissions/", payload, format="multipart")


class TestCreate:
    def test_it_returns_201_with_id_status_and_url(self, client):
        response = post(client)
        assert response.status_code == 201
        body = response.json()
        assert set(body) == {"id", "status", "url"}
        assert uuid.UUID(body["id"]) and body["status"] == "received"
        assert body["url"].endswith(f"/api/v1/submissions/{body['id']}/")

    def test_two_images_with_sides(self, client):
        response = post(client, images=[photo(1), photo(2)], sides=["obverse", "reverse"])
        assert response.status_code == 201
        submission = Submission.objects.get(pk=response.json()["id"])
        assert list(submission.images.values_list("declared_side", flat=True)) == ["obverse", "reverse"]

    @pytest.mark.parametrize(
        ("data", "field"),
        [
            ({"images": []}, "images"),
            ({"images": [photo(1), photo(2), photo(3)]}, "images"),
            ({"sides": ["sideways"]}, "sides"),
            ({"requester_email": "not-an-email"}, "requester_email"),
            ({"requester_email": "   "}, "requester_email"),  # white space is not an address, nor blank
            ({"requester_email": ""}, "requester_email"),
            ({"requester_name": ""}, "requester_name"),
        ],
    )
    def test_bad_input_returns_400_naming_the_field(self, client, data, field):
        response = post(client, **data)
        assert response.status_code == 400
        assert field in response.json()["errors"]
        assert Submission.objects.count() == 0

    def test_no_photo_is_explained_in_words(self, client):
        response = post(client, images=[])
        assert response.json()["errors"]["images"] == [
            "Add at least 1 photo (as `images`): the obverse, the reverse, or both."
        ]

    def test_photos_are_not_published_unless_the_partner_says_under_which_licence(self, client):
        private = post(client)
        licensed = post(client, photo_licence="cc0-1.0", photo_credit="Museum X", requester_email="b@example.org")
        rows = Submission.objects.in_bulk([private.json()["id"], licensed.json()["id"]])
        assert rows[uuid.UUID(private.json()["id"])].photo_licence == "none"
        assert (
            rows[uuid.UUID(licensed.json()["id"])].photo_licence,
            rows[uuid.UUID(licensed.json()["id"])].photo_credit,
        ) == (
            "cc0-1.0",
            "Museum X",
        )
        assert post(client, photo_licence="all-rights-reserved").status_code == 400

    def test_a_retry_with_the_same_idempotency_key_answers_the_first_submission(self, client):
        key = str(uuid.uuid4())
        first = client.post(
            "/api/v1/submissions/",
            {"requester_name": "Ada", "requester_email": "ada@example.org", "images": [photo()]},
            format="multipart",
            HTTP_IDEMPOTENCY_KEY=key,
        )
        retry = client.post(
            "/api/v1/submissions/",
            {"requester_name": "Ada", "requester_email": "ada@example.org", "images": [photo()]},
            format="multipart",
            HTTP_IDEMPOTENCY_KEY=key,
        )
        assert (first.status_code, retry.status_code) == (201, 200)
        assert first.json() == retry.json() and Submission.objects.count() == 1
        bad = client.post("/api/v1/submissions/", {"images": [photo()]}, format="multipart", HTTP_IDEMPOTENCY_KEY="x")
        assert bad.status_code == 400 and "idempotency_key" in bad.json()["errors"]

    def test_an_empty_file_is_refused(self, client):
        response = post(client, images=[SimpleUploadedFile("empty.jpg", b"", content_type="image/jpeg")])
        assert response.status_code == 400
        assert "empty" in str(response.json()["errors"]["images"])

    def test_a_partner_with_a_token_needs_no_contact_details(self, client, volunteer):
        token = Token.objects.create(user=volunteer)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        response = client.post("/api/v1/submissions/", {"images": [photo()]}, format="multipart")
        assert response.status_code == 201
        assert Submission.objects.get().submitted_by == volunteer

    def test_anonymous_use_is_rate_limited(self, client, settings):
        settings.OBVERSE_ANON_SUBMISSIONS_PER_HOUR = 1
        assert post(client).status_code == 201
        response = post(client, requester_email="other@example.org")
        assert response.status_code == 400
        assert "Too many" in str(response.json()["errors"])


class TestDetail:
    def test_it_returns_the_documented_shape(self, client, fake_pipeline, django_capture_on_commit_callbacks):
        gold = make_concept("material", "Gold")
        item = make_item(concepts=[gold], reference="RIC IX 8B", uri="http://numismatics.org/ocre/id/ric.9.med.8B")
        catalogue_image(item, seed=9, pipeline=fake_pipeline)
        with django_capture_on_commit_callbacks(execute=True):
            created = post(client, images=[photo(9)]).json()
        response = client.get(f"/api/v1/submissions/{created['id']}/")
        assert response.status_code == 200
        body = response.json()
        assert body["id"] == created["id"] and body["status"] == "awaiting_review" and body["error"] == ""
        image = body["images"][0]
        assert image["side"] == "obverse" and 0 <= image["side_confidence"] <= 1
        assert image["metadata"]["material"] == {"value": "Gold", "confidence": pytest.approx(1.0), "calibrated": True}
        assert [(o["box"], o["fraction"], o["chosen"]) for o in image["objects"]] == [
            ([0, 0, 120, 120], [0.0, 0.0, 1.0, 1.0], True)  # the fake finds the whole 120-px picture
        ]
        candidate = body["candidates"][0]
        assert candidate["rank"] == 1 and candidate["score"] == pytest.approx(1.0, abs=1e-3)
        assert candidate["agreement"] == 0.0  # the only item: nothing for its metadata to stand out from
        assert candidate["total"] == candidate["score"] + candidate["agreement"]  # what ranks them
        assert candidate["item"] == {
            "id": item.pk,
            "reference": "RIC IX 8B",
            "uri": "http://numismatics.org/ocre/id/ric.9.med.8B",
            "title": item.title,
        }

    def test_requester_contact_details_are_not_exposed(self, client):
        created = post(client).json()
        text = client.get(f"/api/v1/submissions/{created['id']}/").content.decode()
        assert "ada@example.org" not in text and "Ada" not in text

    def test_an_unknown_id_is_404(self, client):
        response = client.get(f"/api/v1/submissions/{uuid.uuid4()}/")
        assert response.status_code == 404 and response.json() == {"errors": {"id": ["No such submission."]}}


class TestActions:
    """The result page's three actions, for partners who never open it (the UUID grants them, as there)."""

    def test_candidates_are_narrowed_by_metadata_and_searched_again(
        self, client, fake_pipeline, django_capture_on_commit_callbacks
    ):
        silver, gold = make_concept("material", "Silver"), make_concept("material", "Gold")
        gold_item, silver_item = make_item(concepts=[gold]), make_item(concepts=[silver])
        catalogue_image(gold_item, seed=700, pipeline=fake_pipeline)
        catalogue_image(silver_item, seed=701, pipeline=fake_pipeline)
        with django_capture_on_commit_callbacks(execute=True):
            created = post(client, images=[photo(700)]).json()
        url = f"/api/v1/submissions/{created['id']}/candidates/"
        response = client.post(url, {"material": silver.slug}, format="json")
        assert response.status_code == 200
        body = response.json()
        assert body["filters"] == {"material": silver.slug}
        assert [c["item"]["id"] for c in body["candidates"]] == [silver_item.pk]
        # No filter is the whole catalogue again.
        body = client.post(url, {}, format="json").json()
        assert body["filters"] == {} and body["candidates"][0]["item"]["id"] == gold_item.pk

    def test_candidates_are_narrowed_by_region(self, client, fake_pipeline, django_capture_on_commit_callbacks):
        asia, gaul = make_concept("region", "Asia"), make_concept("region", "Gaul")
        asian, gallic = make_item(concepts=[asia]), make_item(concepts=[gaul])
        catalogue_image(asian, seed=702, pipeline=fake_pipeline)
        catalogue_image(gallic, seed=703, pipeline=fake_pipeline)
        with django_capture_on_commit_callbacks(execute=True):
            created = post(client, images=[photo(702)]).json()
        response = client.post(f"/api/v1/submissions/{created['id']}/candidates/", {"region": gaul.slug}, format="json")
        assert response.status_code == 200
        body = response.json()
        assert body["filters"] == {"region": gaul.slug}
        assert [c["item"]["id"] for c in body["candidates"]] == [gallic.pk]

    def test_candidates_cannot_be_narrowed_before_processing_has_finished(self, client):
        created = post(client).json()
        response = client.post(f"/api/v1/submissions/{created['id']}/candidates/", {"material": "silver"})
        assert response.status_code == 409  # well-formed, but the submission is not ready for it
        assert "processing has finished" in str(response.json()["errors"]["filters"])

    def test_another_object_is_described(self, client, fake_pipeline, django_capture_on_commit_callbacks):
        left_item, right_item = make_item(), make_item()
        catalogue_image(left_item, seed=800, pipeline=FakePipeline())
        catalogue_image(right_item, seed=801, pipeline=FakePipeline())
        fake_pipeline.objects = 2
        two_coins = SimpleUploadedFile("two.png", two_coins_png(800, 801), content_type="image/png")
        with django_capture_on_commit_callbacks(execute=True):
            created = post(client, images=[two_coins]).json()
        detail = client.get(created["url"]).json()
        assert [o["chosen"] for o in detail["images"][0]["objects"]] == [True, False]
        assert detail["candidates"][0]["item"]["id"] == left_item.pk
        url = f"/api/v1/submissions/{created['id']}/objects/"
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            response = client.post(url, {"image": 0, "object": 1}, format="json")
        assert response.status_code == 202 and response.json()["status"] == "received"
        assert len(callbacks) == 1  # queued for the worker, which runs here in sync mode
        detail = client.get(created["url"]).json()
        assert detail["status"] == "awaiting_review"
        assert [o["chosen"] for o in detail["images"][0]["objects"]] == [False, True]
        assert detail["candidates"][0]["item"]["id"] == right_item.pk

    @pytest.mark.parametrize(
        ("data", "status", "field"),
        [
            ({"image": 0, "object": 5}, 409, "object"),  # this photo has one object
            ({"image": 1, "object": 0}, 409, "object"),  # this submission has one photo
            ({"image": 2, "object": 0}, 400, "image"),  # no submission has a third photo
            ({"image": -1}, 400, "image"),
        ],
    )
    def test_an_object_that_does_not_exist_is_refused_naming_why(
        self, client, fake_pipeline, django_capture_on_commit_callbacks, data, status, field
    ):
        with django_capture_on_commit_callbacks(execute=True):
            created = post(client).json()
        response = client.post(f"/api/v1/submissions/{created['id']}/objects/", data, format="json")
        assert response.status_code == status and field in response.json()["errors"]
        assert Submission.objects.get(pk=created["id"]).status == "awaiting_review"

    def test_none_match_is_recorded_once_for_the_reviewers(
        self, client, fake_pipeline, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            created = post(client).json()
        assert client.get(created["url"]).json()["none_match_at"] is None
        url = f"/api/v1/submissions/{created['id']}/none-match/"
        first = client.post(url)
        assert first.status_code == 200 and first.json()["none_match_at"]
        again = client.post(url)  # a second call changes nothing and is not an error
        assert again.status_code == 200 and again.json()["none_match_at"] == first.json()["none_match_at"]

    def test_none_match_waits_for_the_candidates(self, client):
        created = post(client).json()
        response = client.post(f"/api/v1/submissions/{created['id']}/none-match/")
        assert response.status_code == 409 and "processing has finished" in str(response.json()["errors"])
        assert Submission.objects.get(pk=created["id"]).none_match_at is None

    @pytest.mark.parametrize("action", ["candidates", "objects", "none-match"])
    def test_an_unknown_id_is_404_and_get_is_not_allowed(self, client, action):
        missing = client.post(f"/api/v1/submissions/{uuid.uuid4()}/{action}/")
        assert missing.status_code == 404 and missing.json() == {"errors": {"id": ["No such submission."]}}
        created = post(client).json()
        assert client.get(f"/api/v1/submissions/{created['id']}/{action}/").status_code == 405
        unchanged = Submission.objects.get(pk=created["id"])
        assert (unchanged.status, unchanged.filters, unchanged.none_match_at) == ("received", {}, None)
