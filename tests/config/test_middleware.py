"""The client's address behind reverse proxies: X-Forwarded-For is believed from trusted proxies only.

Every limit keyed by address reads the one ``TrustedProxyMiddleware`` sets: the anonymous upload
limit, the API throttles and the login lockout (tests/config/test_lockout.py). Each is tested both
ways: behind a trusted proxy two clients are told apart by the header; from an untrusted peer a
forged header changes nothing.
"""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from config.middleware import forwarded_client, trusted_networks
from identification.api.views import SubmissionAnonThrottle
from identification.models import Submission
from tests.factories import pattern_png

PROXY = "10.0.0.5"
TRUSTED = trusted_networks(["10.0.0.0/24", "2001:db8:ffff::/48"])


class TestForwardedClient:
    @pytest.mark.parametrize(
        ("remote_addr", "forwarded_for", "client"),
        [
            pytest.param("198.51.100.7", "203.0.113.9", "198.51.100.7", id="untrusted-peer-header-ignored"),
            pytest.param(PROXY, "203.0.113.9", "203.0.113.9", id="trusted-proxy"),
            pytest.param(PROXY, "1.2.3.4, 203.0.113.9", "203.0.113.9", id="forged-left-part-ignored"),
            pytest.param(PROXY, "203.0.113.9, 10.0.0.7", "203.0.113.9", id="two-trusted-proxies"),
            pytest.param(PROXY, "10.0.0.8, 10.0.0.7", "10.0.0.8", id="all-hops-trusted"),
            pytest.param(PROXY, "not-an-address, 203.0.113.9", "203.0.113.9", id="garbage-left"),
            pytest.param(PROXY, "203.0.113.9, rubbish", PROXY, id="garbage-from-the-proxy-side"),
            pytest.param(PROXY, "203.0.113.9:51234", "203.0.113.9", id="ipv4-with-port"),
            pytest.param(PROXY, "[2001:db8::1]:443", "2001:db8::1", id="ipv6-with-port"),
            pytest.param("2001:db8:ffff::2", "2001:db8::1", "2001:db8::1", id="ipv6-proxy"),
            pytest.param("::ffff:10.0.0.5", "203.0.113.9", "203.0.113.9", id="ipv4-mapped-proxy"),
        ],
    )
    def test_it_believes_only_what_trusted_proxies_added(self, remote_addr, forwarded_for, client):
        assert forwarded_client(remote_addr, forwarded_for, TRUSTED) == client

    def test_no_trusted_proxy_means_the_peer(self):
        assert forwarded_client(PROXY, "203.0.113.9", ()) == PROXY

    def test_a_bad_entry_in_the_setting_is_refused_at_start(self, monkeypatch):
        import subprocess
        import sys

        monkeypatch.setenv("OBVERSE_TRUSTED_PROXIES", "10.0.0.1,proxy.example.org")
        done = subprocess.run(
            [sys.executable, "-c", "import config.settings"], capture_output=True, text=True, timeout=120
        )
        assert done.returncode != 0 and "proxy.example.org" in done.stderr


def _submit(client: APIClient, n: int, **extra):
    photo = SimpleUploadedFile("coin.png", pattern_png(n), content_type="image/png")
    payload = {"requester_name": "Ada", "requester_email": f"person{n}@example.org", "images": [photo]}
    return client.post("/api/v1/submissions/", payload, format="multipart", **extra)


@pytest.mark.django_db
class TestTheUploadLimitBehindAProxy:
    @pytest.fixture(autouse=True)
    def _one_an_hour(self, settings, monkeypatch):
        settings.OBVERSE_ANON_SUBMISSIONS_PER_HOUR = 1
        monkeypatch.setattr("identification.services.submission_enqueue", lambda submission_id: None)

    def test_behind_a_trusted_proxy_clients_are_counted_apart(self, settings):
        settings.OBVERSE_TRUSTED_PROXIES = ["10.0.0.0/24"]
        client = APIClient(REMOTE_ADDR=PROXY)
        assert _submit(client, 1, HTTP_X_FORWARDED_FOR="203.0.113.1").status_code == 201
        assert _submit(client, 2, HTTP_X_FORWARDED_FOR="203.0.113.2").status_code == 201
        assert _submit(client, 3, HTTP_X_FORWARDED_FOR="203.0.113.1").status_code == 400  # the first client again
        assert sorted(Submission.objects.values_list("client_ip", flat=True)) == ["203.0.113.1", "203.0.113.2"]

    def test_from_an_untrusted_peer_a_forged_header_changes_nothing(self, settings):
        settings.OBVERSE_TRUSTED_PROXIES = ["10.0.0.0/24"]
        client = APIClient(REMOTE_ADDR="198.51.100.7")
        assert _submit(client, 1, HTTP_X_FORWARDED_FOR="203.0.113.1").status_code == 201
        assert _submit(client, 2, HTTP_X_FORWARDED_FOR="203.0.113.2").status_code == 400
        assert list(Submission.objects.values_list("client_ip", flat=True)) == ["198.51.100.7"]

    def test_without_trusted_proxies_the_header_is_ignored_even_from_a_proxy(self, settings):
        settings.OBVERSE_TRUSTED_PROXIES = []
        client = APIClient(REMOTE_ADDR=PROXY)
        assert _submit(client, 1, HTTP_X_FORWARDED_FOR="203.0.113.1").status_code == 201
        assert _submit(client, 2, HTTP_X_FORWARDED_FOR="203.0.113.2").status_code == 400


@pytest.mark.django_db
class TestTheApiThrottleBehindAProxy:
    """DRF's throttles read REMOTE_ADDR only (``NUM_PROXIES = 0``): by default they believe any X-Forwarded-For."""

    @pytest.fixture(autouse=True)
    def _two_requests_an_hour(self, settings, monkeypatch):
        settings.OBVERSE_ANON_SUBMISSIONS_PER_HOUR = 100
        monkeypatch.setattr(SubmissionAnonThrottle, "THROTTLE_RATES", {"submissions_anon": "2/hour"})
        monkeypatch.setattr("identification.services.submission_enqueue", lambda submission_id: None)

    def test_a_forged_header_does_not_escape_the_throttle(self, settings):
        settings.OBVERSE_TRUSTED_PROXIES = ["10.0.0.0/24"]
        client = APIClient(REMOTE_ADDR="198.51.100.7")
        statuses = [_submit(client, n, HTTP_X_FORWARDED_FOR=f"203.0.113.{n}").status_code for n in range(3)]
        assert statuses == [201, 201, 429]

    def test_behind_a_trusted_proxy_each_client_has_its_own_allowance(self, settings):
        settings.OBVERSE_TRUSTED_PROXIES = ["10.0.0.0/24"]
        client = APIClient(REMOTE_ADDR=PROXY)
        first = [_submit(client, n, HTTP_X_FORWARDED_FOR="203.0.113.1").status_code for n in range(3)]
        other = _submit(client, 9, HTTP_X_FORWARDED_FOR="203.0.113.2").status_code
        assert first == [201, 201, 429] and other == 201
