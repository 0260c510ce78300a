"""Hostile uploads and floods against the submission paths: the service, the API and the web form.

A file the header check refuses leaves no Submission row and no stored file, with the reason in the
response (400, never 500). A file that passes the header check but whose pixels are damaged ends as
a ``failed`` submission with the reason, and processing returns normally (the worker lives on).
Fuzz runs are reproducible (``derandomize``) and bounded (``OBVERSE_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import io
import os
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from identification import services, uploads
from identification.api.views import SubmissionAnonThrottle
from identification.models import Submission, SubmissionImage, SubmissionStatus
from tests.factories import pattern_png
from tests.samples import MUTATION, crafted_header, mutate, seeds

pytestmark = pytest.mark.django_db

# Each example writes rows and files, so fewer than the pure decode fuzzing; same knob to raise it.
EXAMPLES = max(10, int(os.environ.get("OBVERSE_FUZZ_EXAMPLES", "150")) // 3)
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    # Rows accumulate across examples of one test; each example compares counts before and after.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
API_URL = "/api/v1/submissions/"


@pytest.fixture
def no_anonymous_limit(settings, monkeypatch):
    """Fuzzing posts far more than the hourly limits allow; the limits have their own tests below."""
    settings.OBVERSE_ANON_SUBMISSIONS_PER_HOUR = 10**6
    monkeypatch.setattr(SubmissionAnonThrottle, "THROTTLE_RATES", {"submissions_anon": "100000/hour"})


def _upload(data: bytes, name: str = "coin.jpg", content_type: str = "image/jpeg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


def _jpeg(size=(120, 90)) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(pattern_png(3, size=max(size)))).convert("RGB").resize(size).save(buffer, format="JPEG")
    return buffer.getvalue()


def _zip_of(name: str, text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, text)
    return buffer.getvalue()


def _stored_files(settings) -> list[Path]:
    root = Path(settings.OBVERSE_PRIVATE_UPLOADS)
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


def _create(files, **kwargs) -> Submission:
    values = {"requester_name": "Ada", "requester_email": "ada@example.org", "client_ip": "198.51.100.7"}
    return services.submission_create(files=files, **{**values, **kwargs})


# Refused at the door, each with words the uploader can act on (name, type and extension are ignored).
REFUSED = [
    pytest.param(b"", "coin.jpg", "empty", id="empty"),
    pytest.param(b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj", "coin.jpg", "PDF", id="pdf-named-jpg"),
    pytest.param(
        b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", "coin.svg", "SVG|HTML", id="svg"
    ),
    pytest.param(
        b"<html><body><script>alert(document.cookie)</script></body></html>", "coin.jpg", "HTML", id="html-named-jpg"
    ),
    pytest.param(
        b"GIF89a\x20\x00\x20\x00\x00\x00\x00<script>alert(1)</script>",
        "coin.gif",
        "HTML|image|damaged",
        id="gif-html-polyglot",
    ),
    pytest.param(_zip_of("a.txt", "x" * 100), "coin.jpg", "ZIP", id="zip-named-jpg"),
    pytest.param(crafted_header("PNG", 100_000, 100_000), "bomb.png", "too large", id="png-bomb-100000x100000"),
    pytest.param(crafted_header("JPEG", 65_000, 65_000), "bomb.jpg", "too large", id="jpeg-bomb-65000x65000"),
    pytest.param(crafted_header("GIF", 60_000, 60_000), "bomb.gif", "too large", id="gif-bomb-60000x60000"),
    pytest.param(crafted_header("PNG", 10_000, 6_000), "big.png", "60 megapixels", id="png-60-megapixels"),
    pytest.param(crafted_header("JPEG", 16_000, 10_000), "big.jpg", "160 megapixels", id="jpeg-160-megapixels"),
    pytest.param(crafted_header("PNG", 20, 20), "tiny.png", "too small", id="tiny"),
    pytest.param(crafted_header("PNG", 20_000, 40), "strip.png", "too narrow", id="strip"),
    pytest.param(b"\x00\x13garbage" * 64, "coin.jpg", "not an image", id="garbage"),
]


class TestTheServiceRefusesHostileFiles:
    @pytest.mark.parametrize(("data", "name", "words"), REFUSED)
    def test_it_refuses_with_the_reason_and_stores_nothing(self, settings, data, name, words):
        with pytest.raises(ValidationError) as excinfo:
            _create([_upload(data, name)])
        reasons = " ".join(excinfo.value.message_dict["images"])
        assert any(word.lower() in reasons.lower() for word in words.split("|")), reasons
        assert name in reasons  # which of the (up to two) files
        assert Submission.objects.count() == 0 and SubmissionImage.objects.count() == 0
        assert _stored_files(settings) == []

    def test_one_bad_file_of_two_refuses_the_whole_submission(self, settings):
        with pytest.raises(ValidationError):
            _create([_upload(_jpeg()), _upload(b"%PDF-1.4", "back.jpg")], sides=["obverse", "reverse"])
        assert Submission.objects.count() == 0 and _stored_files(settings) == []

    def test_a_photo_named_html_is_judged_by_its_content_and_stored_under_a_neutral_name(self, fake_pipeline):
        submission = _create([_upload(_jpeg(), "coin.html", "text/html")])
        image = submission.images.get()
        assert image.upload_path.endswith(".upload")  # never an extension a server would map to HTML
        services.submission_process(submission_id=submission.pk)
        image.refresh_from_db()
        assert image.original.name.endswith(".jpg")


def _flip_scan(data: bytes) -> bytes:
    """Invert the entropy-coded pixel data of a JPEG, leaving its headers intact."""
    start = data.index(b"\xff\xda") + 20
    return data[:start] + bytes(b ^ 0x5A for b in data[start:-2]) + data[-2:]


class TestDamagedPixelsFailInTheWorker:
    @pytest.mark.parametrize(
        ("damage", "status"),
        [
            pytest.param(lambda data: data[: len(data) // 2], SubmissionStatus.FAILED, id="truncated-jpeg"),
            pytest.param(_flip_scan, SubmissionStatus.FAILED, id="bit-flipped-scan"),
            # libjpeg conceals a missing end marker: the photo is whole, so it is processed as usual.
            pytest.param(lambda data: data[:-2] + b"\0\0", SubmissionStatus.AWAITING_REVIEW, id="no-end-marker"),
        ],
    )
    def test_a_file_with_a_good_header_and_bad_pixels_ends_failed_with_the_reason(self, fake_pipeline, damage, status):
        submission = _create([_upload(damage(_jpeg((400, 300))))])  # the header is fine: accepted
        assert services.submission_process(submission_id=submission.pk) is True  # returns: the worker lives on
        submission.refresh_from_db()
        assert submission.status == status
        if status == SubmissionStatus.FAILED:
            assert submission.error == "The file is not an image (or is damaged)."
            assert fake_pipeline.calls == 0  # failed at decoding, before any model ran

    def test_a_truncated_png_fails_with_the_reason(self, fake_pipeline):
        data = pattern_png(5, size=300)
        submission = _create([_upload(data[: len(data) // 2], "coin.png")])
        services.submission_process(submission_id=submission.pk)
        submission.refresh_from_db()
        assert submission.status == SubmissionStatus.FAILED
        assert "not an image" in submission.error.lower()
        assert fake_pipeline.calls == 0

    def test_a_jpeg_zip_polyglot_is_processed_and_the_archive_never_reaches_a_stored_file(self, fake_pipeline):
        data = _jpeg() + _zip_of("payload.html", "<script>alert(1)</script>")
        submission = _create([_upload(data)])
        services.submission_process(submission_id=submission.pk)
        submission.refresh_from_db()
        assert submission.status == SubmissionStatus.AWAITING_REVIEW
        image = submission.images.get()
        for field in (image.original, image.cutout, image.upright):
            with field.open("rb") as fh:
                stored = fh.read()
            assert b"PK\x03\x04" not in stored and b"<script" not in stored


def _unusual(kind: str) -> bytes:
    """Valid photos in the modes and formats phones, scanners and editors produce besides 8-bit RGB."""
    base = Image.open(io.BytesIO(pattern_png(7, size=200))).convert("RGB")
    buffer = io.BytesIO()
    if kind == "cmyk-jpeg":
        base.convert("CMYK").save(buffer, format="JPEG")
    elif kind == "16-bit-png":
        grey = np.asarray(base.convert("L"), dtype=np.uint16) * 257
        Image.fromarray(grey).save(buffer, format="PNG")  # mode I;16
    elif kind == "animated-gif":
        frames = [base.convert("P"), base.rotate(90).convert("P")]
        frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    elif kind == "palette-png-with-transparency":
        palette = base.convert("P")
        palette.info["transparency"] = 0
        palette.save(buffer, format="PNG", transparency=0)
    return buffer.getvalue()


class TestUnusualButValidPhotos:
    """Each is accepted, processed to the end and shown as an ordinary sRGB photo: nothing to refuse."""

    @pytest.mark.parametrize("kind", ["cmyk-jpeg", "16-bit-png", "animated-gif", "palette-png-with-transparency"])
    def test_it_is_processed_like_any_photo(self, fake_pipeline, kind):
        submission = _create([_upload(_unusual(kind), f"coin.{kind.rsplit('-', 1)[-1]}")])
        services.submission_process(submission_id=submission.pk)
        submission.refresh_from_db()
        assert submission.status == SubmissionStatus.AWAITING_REVIEW, submission.error
        image = submission.images.get()
        with image.original.open("rb") as fh:
            shown = Image.open(io.BytesIO(fh.read()))
            assert shown.format == "JPEG" and shown.mode == "RGB" and shown.size == (200, 200)
        assert fake_pipeline.calls == 1


hostile_uploads = st.builds(
    mutate, st.sampled_from(sorted(seeds())).map(lambda name: seeds()[name]), st.lists(MUTATION, min_size=1, max_size=6)
)


class TestFuzzedUploads:
    @FUZZ
    @given(data=hostile_uploads)
    def test_the_service_refuses_cleanly_or_the_worker_finishes_the_submission(
        self, fake_pipeline, no_anonymous_limit, data
    ):
        before = Submission.objects.count()
        try:
            submission = _create([_upload(data)])
        except ValidationError as exc:
            assert exc.message_dict["images"]
            assert Submission.objects.count() == before
            return
        services.submission_process(submission_id=submission.pk)
        submission.refresh_from_db()
        assert submission.status in (SubmissionStatus.AWAITING_REVIEW, SubmissionStatus.FAILED)
        assert (submission.status == SubmissionStatus.FAILED) == bool(submission.error)

    @FUZZ
    @given(data=hostile_uploads)
    def test_the_api_answers_201_or_400_with_reasons_never_500(self, no_anonymous_limit, data):
        client = APIClient()
        before = Submission.objects.count()
        payload = {"requester_name": "Ada", "requester_email": "ada@example.org", "images": [_upload(data)]}
        response = client.post(API_URL, payload, format="multipart")
        assert response.status_code in (201, 400), response.content[:500]
        if response.status_code == 400:
            assert response.json()["errors"]["images"]
            assert Submission.objects.count() == before
        else:
            assert Submission.objects.count() == before + 1


class TestTheApiAndFormRefuseHostileFiles:
    @pytest.mark.parametrize(("data", "name", "words"), REFUSED)
    def test_the_api_answers_400_with_the_reason(self, data, name, words):
        payload = {"requester_name": "Ada", "requester_email": "ada@example.org", "images": [_upload(data, name)]}
        response = APIClient().post(API_URL, payload, format="multipart")
        assert response.status_code == 400
        reasons = " ".join(response.json()["errors"]["images"])
        assert any(word.lower() in reasons.lower() for word in words.split("|")), reasons
        assert Submission.objects.count() == 0

    @pytest.mark.parametrize(("data", "name", "words"), [p for p in REFUSED if p.id != "empty"])
    def test_the_web_form_shows_the_reason(self, client, data, name, words):
        form = {"photo_1": _upload(data, name), "requester_name": "Ada", "requester_email": "ada@example.org"}
        response = client.post("/identify/", form)
        assert response.status_code == 400
        reasons = str(response.context["errors"])
        assert any(word.lower() in reasons.lower() for word in words.split("|")), reasons
        assert "<script>alert" not in response.content.decode()  # nothing from the file reaches the page as markup
        assert Submission.objects.count() == 0

    def test_uploads_spooled_to_disk_are_checked_the_same_way(self, client, settings):
        settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0  # every upload becomes a temporary file, as large ones do
        contact = {"requester_name": "Ada", "requester_email": "ada@example.org", "photo_licence": "none"}
        bomb = client.post("/identify/", {"photo_1": _upload(crafted_header("PNG", 100_000, 100_000)), **contact})
        assert bomb.status_code == 400 and "too large" in str(bomb.context["errors"])
        good = client.post("/identify/", {"photo_1": _upload(pattern_png(4), "coin.png"), **contact})
        assert good.status_code == 302
        image = Submission.objects.get().images.get()
        with uploads.private_uploads().open(image.upload_path) as stored:
            assert stored.read() == pattern_png(4)  # the probe left the file at its start: saved whole


# --- rate limits -----------------------------------------------------------------------------------


@pytest.fixture
def limit_two(settings):
    settings.OBVERSE_ANON_SUBMISSIONS_PER_HOUR = 2
    return 2


def _photo(seed: int = 1) -> SimpleUploadedFile:
    return _upload(pattern_png(seed), "coin.png", "image/png")


def _refused_as_flood(**kwargs) -> str:
    with pytest.raises(ValidationError) as excinfo:
        _create([_photo()], **kwargs)
    message = " ".join(excinfo.value.message_dict["non_field_errors"])
    assert "Too many submissions" in message
    return message


class TestServiceRateLimit:
    def test_the_submission_after_the_limit_is_refused_with_a_clear_message(self, limit_two):
        for n in range(limit_two):
            _create([_photo()], requester_email=f"p{n}@example.org")
        message = _refused_as_flood(requester_email="p9@example.org")
        assert "at most 2" in message
        assert Submission.objects.count() == limit_two

    def test_another_email_from_the_same_address_is_limited_by_the_address(self, limit_two):
        _create([_photo()], requester_email="a@example.org")
        _create([_photo()], requester_email="b@example.org")
        _refused_as_flood(requester_email="fresh@example.org")

    @pytest.mark.parametrize(
        "variant", ["ada@example.org", "ADA@Example.org", "  ada@example.org ", "ada+spam@example.org"]
    )
    def test_the_same_email_from_other_addresses_is_limited_by_the_email(self, limit_two, variant):
        _create([_photo()], requester_email="ada@example.org", client_ip="203.0.113.1")
        _create([_photo()], requester_email="ada+1@example.org", client_ip="203.0.113.2")
        _refused_as_flood(requester_email=variant, client_ip="203.0.113.3")

    def test_a_different_person_on_another_address_is_not_limited(self, limit_two):
        _create([_photo()], requester_email="ada@example.org", client_ip="203.0.113.1")
        _create([_photo()], requester_email="ada@example.org", client_ip="203.0.113.1")
        assert _create([_photo()], requester_email="bob@example.org", client_ip="203.0.113.9")
        assert _create([_photo()], requester_email="adam@example.org", client_ip="203.0.113.10")

    def test_an_ipv6_client_is_limited_by_its_whole_64_network(self, limit_two):
        _create([_photo()], requester_email="a@example.org", client_ip="2001:db8:1:2::1")
        _create([_photo()], requester_email="b@example.org", client_ip="2001:db8:1:2:ffff::2")
        _refused_as_flood(requester_email="c@example.org", client_ip="2001:db8:1:2:abcd::3")
        assert _create([_photo()], requester_email="d@example.org", client_ip="2001:db8:1:3::1")

    def test_signed_in_users_are_not_limited_by_the_anonymous_limit(self, limit_two, volunteer):
        for _ in range(limit_two + 2):
            assert _create([_photo()], user=volunteer, requester_name="", requester_email="")
        _create([_photo()], requester_email="a@example.org")  # their rows do not count against the address


class TestApiRateLimit:
    def _post(self, client, email: str, ip: str = "198.51.100.20"):
        payload = {"requester_name": "Ada", "requester_email": email, "images": [_photo()]}
        return client.post(API_URL, payload, format="multipart", REMOTE_ADDR=ip)

    def test_the_request_after_the_limit_gets_400_with_a_clear_message(self, limit_two):
        client = APIClient()
        assert [self._post(client, email).status_code for email in ("ada@example.org", "ada+2@example.org")] == [
            201,
            201,
        ]
        for email, ip in (("other@example.org", "198.51.100.20"), ("Ada@Example.org", "198.51.100.99")):
            response = self._post(client, email, ip)  # a new email from the same address; the email from elsewhere
            assert response.status_code == 400
            assert "Too many submissions" in str(response.json()["errors"]["non_field_errors"])
        assert Submission.objects.count() == 2

    def test_a_partner_with_a_token_is_not_limited_by_the_anonymous_limit(self, limit_two, volunteer):
        client = APIClient()
        self._post(client, "a@example.org")
        self._post(client, "b@example.org")
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=volunteer).key}")
        for _ in range(limit_two + 2):
            response = client.post(API_URL, {"images": [_photo()]}, format="multipart", REMOTE_ADDR="198.51.100.20")
            assert response.status_code == 201
        assert Submission.objects.filter(submitted_by=volunteer).count() == limit_two + 2

    def test_the_api_throttle_also_counts_refused_requests_per_address(self, monkeypatch, settings):
        # The service counts stored submissions; the throttle counts every request, bad ones included.
        settings.OBVERSE_ANON_SUBMISSIONS_PER_HOUR = 100
        monkeypatch.setattr(SubmissionAnonThrottle, "THROTTLE_RATES", {"submissions_anon": "3/hour"})
        client = APIClient()
        pdf = {"requester_name": "Ada", "requester_email": "ada@example.org"}
        statuses = [
            client.post(
                API_URL, {**pdf, "images": [_upload(b"%PDF-1.4")]}, format="multipart", REMOTE_ADDR="198.51.100.20"
            ).status_code
            for _ in range(3)
        ]
        assert statuses == [400, 400, 400]
        response = self._post(client, "a@example.org", ip="198.51.100.20")
        assert response.status_code == 429
        assert "throttled" in response.json()["errors"]["non_field_errors"][0].lower()


class TestWebFormRateLimit:
    def _post(self, client, email: str, ip: str = "192.0.2.5"):
        form = {"photo_1": _photo(), "requester_name": "Ada", "requester_email": email, "photo_licence": "none"}
        return client.post("/identify/", form, REMOTE_ADDR=ip)

    def test_the_form_after_the_limit_shows_a_clear_message_and_stores_nothing(self, client, limit_two):
        assert [self._post(client, email).status_code for email in ("ada@example.org", "ada@example.org")] == [302, 302]
        for email, ip in (("other@example.org", "192.0.2.5"), ("ADA@example.org", "192.0.2.77")):
            response = self._post(client, email, ip)
            assert response.status_code == 400
            assert "Too many submissions" in response.content.decode()
        assert Submission.objects.count() == 2

    def test_a_signed_in_volunteer_is_not_limited(self, client, limit_two, volunteer):
        self._post(client, "a@example.org")
        self._post(client, "b@example.org")
        client.force_login(volunteer)
        for _ in range(3):
            form = {"photo_1": _photo(), "photo_licence": "none"}
            assert client.post("/identify/", form, REMOTE_ADDR="192.0.2.5").status_code == 302
        assert Submission.objects.filter(submitted_by=volunteer).count() == 3


# --- the limit under concurrent requests ---------------------------------------------------------

CONCURRENT_CLIENTS = 8


def _advisory_waiters() -> int:
    """How many sessions of this test database wait for an advisory lock right now."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
class TestConcurrentRateLimit:
    """Parallel anonymous requests from one address: exactly the limit get in, however they interleave.

    Every request, once it has counted the recent submissions, waits until each other request has
    counted too or is waiting for the lock the fix takes. Counting and then inserting (the bug) lets
    all of them count the same rows and pass; counting under the lock lets exactly the limit through.
    The wait reads PostgreSQL's lock table, so the test needs no sleep to line the requests up.
    """

    def _burst(self, monkeypatch, *, email_for, ip_for) -> list[int]:
        monkeypatch.setattr(services, "submission_enqueue", lambda submission_id: None)  # no processing
        counted_so_far: list[bool] = []
        lock = threading.Lock()
        real = uploads._rate_limited

        def counted_then_wait(**kwargs) -> bool:
            limited = real(**kwargs)
            with lock:
                counted_so_far.append(limited)
            deadline = time.monotonic() + 30
            while len(counted_so_far) + _advisory_waiters() < CONCURRENT_CLIENTS and time.monotonic() < deadline:
                time.sleep(0.005)
            return limited

        monkeypatch.setattr(uploads, "_rate_limited", counted_then_wait)
        statuses: list[int | None] = [None] * CONCURRENT_CLIENTS
        start = threading.Barrier(CONCURRENT_CLIENTS)

        def post(index: int) -> None:
            try:
                start.wait(timeout=30)
                payload = {"requester_name": "Ada", "requester_email": email_for(index), "images": [_photo(index)]}
                client = APIClient(REMOTE_ADDR=ip_for(index))
                statuses[index] = client.post(API_URL, payload, format="multipart").status_code
            finally:
                connection.close()  # each thread's own connection

        threads = [threading.Thread(target=post, args=(i,)) for i in range(CONCURRENT_CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads), "a request hung"
        assert len(counted_so_far) == CONCURRENT_CLIENTS  # every request really reached the count
        return statuses

    def test_parallel_requests_from_one_address_pass_only_up_to_the_limit(self, monkeypatch, settings):
        settings.OBVERSE_ANON_SUBMISSIONS_PER_HOUR = 3
        statuses = self._burst(
            monkeypatch, email_for=lambda i: f"person{i}@example.org", ip_for=lambda i: "198.51.100.20"
        )
        assert sorted(statuses) == [201] * 3 + [400] * (CONCURRENT_CLIENTS - 3), statuses
        assert Submission.objects.count() == 3

    def test_parallel_requests_with_one_email_from_many_addresses_pass_only_up_to_the_limit(
        self, monkeypatch, settings
    ):
        settings.OBVERSE_ANON_SUBMISSIONS_PER_HOUR = 2
        statuses = self._burst(
            monkeypatch,
            email_for=lambda i: f"ada+{i}@example.org" if i % 2 else "ADA@example.org",  # one person, two spellings
            ip_for=lambda i: f"203.0.113.{10 + i}",
        )
        assert sorted(statuses) == [201] * 2 + [400] * (CONCURRENT_CLIENTS - 2), statuses
        assert Submission.objects.count() == 2
