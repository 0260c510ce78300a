"""Site-wide URLs and the names on every page: the brand on Django's own pages, the icon, the emails' address."""

from __future__ import annotations

import pytest

from config.run import site_url


@pytest.mark.django_db
def test_the_login_page_is_branded_obverse_not_named_after_the_host(client):
    html = client.get("/accounts/login/", HTTP_HOST="127.0.0.1").content.decode()
    assert '<span class="brand-name">Obverse</span>' in html
    assert "<title>Log in · Obverse</title>" in html
    assert ">127.0.0.1<" not in html


def test_favicon_ico_answers_with_the_sites_icon(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("/img/obverse.svg")


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", "8123", "http://127.0.0.1:8123"),
        ("0.0.0.0", "8000", "http://127.0.0.1:8000"),
        ("::1", "9000", "http://[::1]:9000"),
        ("coins.local", "80", "http://coins.local:80"),
    ],
)
def test_make_run_points_emails_at_the_address_it_serves(host, port, url):
    assert site_url(host, port) == url
