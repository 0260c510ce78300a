"""Logins: django-axes locks a client's address out after too many failures, on the site's login page and
the admin's; a success resets the count; an administrator unlocks with ``manage.py axes_reset_ip``.

The address is the one ``config.middleware.TrustedProxyMiddleware`` sets: behind a trusted proxy two
clients are locked out apart, and a forged X-Forwarded-For from anyone else is no way around a lockout.
"""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command
from django.test import Client

from tests.factories import make_user

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-Passphrase-42"
LOGIN = "/accounts/login/"


@pytest.fixture
def curator_with_password(db):
    user = make_user("curatrix", "curator", is_staff=True)
    user.set_password(PASSWORD)
    user.save()
    return user


@pytest.fixture(autouse=True)
def _three_tries(settings):
    settings.AXES_FAILURE_LIMIT = 3


def _login(client: Client, password: str, url: str = LOGIN, **extra):
    return client.post(url, {"username": "curatrix", "password": password}, **extra)


def _fail(client: Client, times: int, **extra) -> list[int]:
    return [_login(client, "wrong", **extra).status_code for _ in range(times)]


def test_a_right_password_logs_in(curator_with_password):
    client = Client(REMOTE_ADDR="198.51.100.7")
    assert _login(client, PASSWORD).status_code == 302
    assert client.get("/review/proposals/").status_code == 200


def test_after_the_limit_even_the_right_password_is_refused_with_the_lockout_page(curator_with_password):
    client = Client(REMOTE_ADDR="198.51.100.7")
    assert _fail(client, 2) == [200, 200]  # the form again, with its error
    locked = _login(client, "wrong")
    assert locked.status_code == 429
    assert "Too many login attempts" in locked.content.decode() and "15 minutes" in locked.content.decode()
    assert "default-src 'self'" in locked["Content-Security-Policy"]  # a page of the site like the others
    assert _login(client, PASSWORD).status_code == 429
    assert client.get("/review/proposals/").status_code == 302  # not logged in: sent to the login page
    # Another address is not locked out.
    assert _login(Client(REMOTE_ADDR="198.51.100.8"), PASSWORD).status_code == 302


def test_the_admin_login_is_locked_out_too(curator_with_password):
    client = Client(REMOTE_ADDR="198.51.100.7")
    _fail(client, 3)
    assert _login(client, PASSWORD, url="/admin/login/").status_code == 429


def test_a_success_resets_the_count(curator_with_password):
    client = Client(REMOTE_ADDR="198.51.100.7")
    _fail(client, 2)
    assert _login(client, PASSWORD).status_code == 302
    client.post("/accounts/logout/")
    assert _fail(client, 2) == [200, 200]  # two more failures are allowed again before the lockout
    assert _login(client, PASSWORD).status_code == 302


def test_an_administrator_unlocks_an_address(curator_with_password):
    client = Client(REMOTE_ADDR="198.51.100.7")
    _fail(client, 3)
    assert AccessAttempt.objects.filter(ip_address="198.51.100.7").exists()
    call_command("axes_reset_ip", "198.51.100.7")
    assert _login(client, PASSWORD).status_code == 302


def test_successful_logins_leave_no_record_of_who_came_from_where(curator_with_password):
    from axes.models import AccessLog

    _login(Client(REMOTE_ADDR="198.51.100.7"), PASSWORD)
    assert not AccessLog.objects.exists()


class TestBehindAProxy:
    def test_behind_a_trusted_proxy_clients_are_locked_out_apart(self, settings, curator_with_password):
        settings.OBVERSE_TRUSTED_PROXIES = ["10.0.0.0/24"]
        client = Client(REMOTE_ADDR="10.0.0.5")
        _fail(client, 3, HTTP_X_FORWARDED_FOR="203.0.113.66")
        assert _login(client, PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.66").status_code == 429
        assert _login(client, PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.1").status_code == 302
        assert list(AccessAttempt.objects.values_list("ip_address", flat=True)) == ["203.0.113.66"]

    def test_a_forged_header_is_no_way_around_a_lockout(self, settings, curator_with_password):
        settings.OBVERSE_TRUSTED_PROXIES = ["10.0.0.0/24"]
        client = Client(REMOTE_ADDR="198.51.100.7")
        statuses = [_login(client, "wrong", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}").status_code for n in range(3)]
        assert statuses == [200, 200, 429]
        assert _login(client, PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.200").status_code == 429
