"""Web hardening: headers and CSP, production settings, CSRF, redirects, escaping, uploads and privacy.

The pages are rendered from the world of tests/config/world.py: hostile text (``<script>`` and
``"><img onerror>``) in every field a person can type, and distinctive private values (requester
email and name, findspot, provenance) that no public page or API answer may contain.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test import Client, override_settings
from django.urls import path, resolve
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.static import serve
from PIL import Image
from rest_framework.authtoken.models import Token

from collection.importers.tabular import import_csv_file
from collection.models import SpecimenImage
from collection.services import specimen_image_tile_names
from config import embedded_db
from config.middleware import content_security_policy
from identification import indexing
from identification.models import Submission
from review import services as rs
from review.models import Proposal
from tests.config.world import (
    FINDSPOT,
    MATRIX,
    PROVENANCE,
    REQUESTER_EMAIL,
    REQUESTER_NAME,
    World,
    client_for,
    db_writes,
)
from tests.factories import claim_and_review, make_item, make_user, pattern_png
from tests.samples import GENERIC_HEADER, generic_row, jpeg_with_gps, write_csv

# Approvals index the new catalogue images inline: with the fake pipeline, never the real models.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fake_pipeline")]

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def _media(request, path: str):
    return serve(request, path, document_root=django_settings.MEDIA_ROOT)


# Media served by Django itself, as in development (config/urls.py with DEBUG), for the middleware's guard.
urlpatterns = [path("media/<path:path>", _media)]


def _html_pages(world: World, role: str, *, admin: bool = False) -> dict[str, str]:
    """Every HTML page the role may GET (status 200) in the permission matrix, URL → content."""
    ids = world.ids()
    client = client_for(world.users[role])
    pages = {}
    for row in MATRIX.values():
        if row.get[role] != 200 or (row.url.startswith("/admin/") and not admin):
            continue
        url = row.url.format(**ids)
        response = client.get(url)
        if response.status_code == 200 and response["Content-Type"].startswith("text/html"):
            pages[url] = response.content.decode()
    return pages


# --- 1. Security headers and a CSP that the pages keep ----------------------------------------


def csp_directives(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        name, *sources = part.split()
        directives[name] = sources
    return directives


@pytest.mark.parametrize(
    "url",
    ["/", "/identify/", "/items/", "/api/v1/items/", "/api/schema/", "/accounts/login/", "/admin/login/", "/nope/"],
)
def test_every_response_carries_the_security_headers(client, url):
    response = client.get(url)
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] in {"same-origin", "strict-origin-when-cross-origin"}
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    csp = csp_directives(response["Content-Security-Policy"])
    assert csp["default-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"]
    assert csp["base-uri"] == ["'self'"] and csp["form-action"] == ["'self'"]
    for directive in ("script-src", "style-src"):
        assert csp[directive] == ["'self'"], f"{directive} allows more than the site's own files"
    policy = response["Permissions-Policy"]
    assert "camera=(self)" in policy and "geolocation=()" in policy and "microphone=()" in policy


def test_an_absolute_media_url_is_allowed_for_images_only():
    policy = csp_directives(
        content_security_policy({"img-src": ["'self'"], "script-src": ["'self'"]}, media_url="https://cdn.example/m/")
    )
    assert policy["img-src"] == ["'self'", "https://cdn.example"] and policy["script-src"] == ["'self'"]
    assert csp_directives(content_security_policy({"img-src": ["'self'"]}, media_url="/media/")) == {
        "img-src": ["'self'"]
    }


def test_a_refused_post_carries_the_headers_too(volunteer):
    client = client_for(volunteer, enforce_csrf_checks=True)
    response = client.post("/review/next/")
    assert response.status_code == 403
    assert response["X-Frame-Options"] == "DENY" and "Content-Security-Policy" in response


@pytest.mark.parametrize("url", ["/identify/", "/api/v1/submissions/"])
def test_a_request_larger_than_the_limit_is_refused_unread(client, url):
    from identification.models import Submission

    body = b"--x\r\nContent-Disposition: form-data; name=images; filename=a.jpg\r\n\r\nxx\r\n--x--\r\n"
    declared = django_settings.OBVERSE_MAX_REQUEST_BYTES + 1  # as a 2 GB "photo" would declare itself
    response = client.generic(
        "POST", url, body, content_type="multipart/form-data; boundary=x", CONTENT_LENGTH=str(declared)
    )
    assert response.status_code == 413
    assert "too large" in response.content.decode() and "Content-Security-Policy" in response
    if url.startswith("/api/"):
        assert "too large" in response.json()["errors"]["images"][0]
    assert not Submission.objects.exists()
    small = client.generic("POST", url, body, content_type="multipart/form-data; boundary=x")
    assert small.status_code != 413  # within the limit: the view decides (here: a bad form)


def test_the_identify_page_may_use_the_camera(client):
    response = client.get("/identify/")
    assert 'capture="environment"' in response.content.decode()
    assert "camera=(self)" in response["Permissions-Policy"]


class InlineCode(HTMLParser):
    """Collects what a strict CSP (script-src/style-src 'self') would block: inline script, style, handlers."""

    DATA_SCRIPTS = {"application/json", "application/ld+json"}

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            self._in_script = "src" not in values and values.get("type") not in self.DATA_SCRIPTS
            source = values.get("src") or ""
            if source.startswith(("http:", "https:", "//")):
                self.problems.append(f"script from another origin: {source}")
        if tag == "style":
            self.problems.append("<style> element")
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=…> handler")
            if name == "style":
                self.problems.append(f"<{tag} style={value!r}>")
            if name in {"href", "src", "action", "formaction"} and (value or "").strip().lower().startswith(
                "javascript:"
            ):
                self.problems.append(f"<{tag} {name}=javascript:…>")

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append(f"inline script: {data.strip()[:60]}")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False


def inline_code(html: str) -> list[str]:
    parser = InlineCode()
    parser.feed(html)
    return parser.problems


def test_the_inline_code_finder_finds_inline_code():
    html = '<script>alert(1)</script><p style="color:red" onclick="x()"><a href="javascript:x()">'
    assert len(inline_code(html)) == 4
    assert inline_code('<script src="/static/a.js"></script><script type="application/json">{}</script>') == []


@pytest.mark.parametrize("role", ["anonymous", "volunteer", "curator", pytest.param("admin", marks=pytest.mark.slow)])
def test_no_page_needs_inline_script_or_style(world, role):
    """Every HTML page of the site (admin included) works under the CSP: nothing inline to block."""
    # Admin pages once, as the superuser who sees them all. Injected markup is caught here too: the
    # hostile text in every field would show up as an inline script or an on* handler.
    pages = _html_pages(world, role, admin=role == "admin")
    assert len(pages) >= 8
    problems = {url: inline_code(html) for url, html in pages.items()}
    assert not {url: found for url, found in problems.items() if found}


# --- 2. Production settings -------------------------------------------------------------------


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    """Run manage.py in a production environment built from scratch (no test or developer settings)."""
    keep = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH"}
    environment = {key: value for key, value in os.environ.items() if key in keep}
    environment.update(
        {
            "OBVERSE_ENV": "production",
            "DATABASE_URL": embedded_db.database_url(),
            "DJANGO_ALLOWED_HOSTS": "obverse.example",
            "OBVERSE_VAR_DIR": str(BASE_DIR / "var"),
        }
    )
    environment.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=environment, capture_output=True, text=True, timeout=120
    )


STRONG_KEY = "k3y-" + uuid.uuid4().hex + uuid.uuid4().hex  # 68 characters, many distinct
# One process: `check --deploy` (raises, so exits non-zero, on any warning), then the settings it ran with.
CHECK_DEPLOY_AND_PRINT = (
    "import json; from django.core.management import call_command; from django.conf import settings as s; "
    "call_command('check', deploy=True, fail_level='WARNING', databases=['default']); "
    "print(json.dumps({k: getattr(s, k, None) for k in ['DEBUG', 'SECURE_SSL_REDIRECT', 'SESSION_COOKIE_SECURE', "
    "'CSRF_COOKIE_SECURE', 'SECURE_HSTS_SECONDS', 'SILENCED_SYSTEM_CHECKS']}))"
)


def test_production_requires_a_secret_key_and_names_the_variable():
    result = manage("check")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr and "ImproperlyConfigured" in result.stderr


def test_production_refuses_debug():
    result = manage("check", DJANGO_SECRET_KEY=STRONG_KEY, DJANGO_DEBUG="1")
    assert result.returncode != 0 and "DJANGO_DEBUG must be off" in result.stderr


def test_production_passes_check_deploy_with_https_settings_on():
    result = manage("shell", "-c", CHECK_DEPLOY_AND_PRINT, DJANGO_SECRET_KEY=STRONG_KEY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues (1 silenced)" in result.stdout  # only W021 (HSTS preload), see settings.py
    shown = json.loads(result.stdout.strip().splitlines()[-1])
    assert shown["DEBUG"] is False
    assert shown["SECURE_SSL_REDIRECT"] and shown["SESSION_COOKIE_SECURE"] and shown["CSRF_COOKIE_SECURE"]
    assert shown["SECURE_HSTS_SECONDS"] >= 30 * 24 * 3600
    assert shown["SILENCED_SYSTEM_CHECKS"] == ["security.W021"]


def test_check_deploy_really_checks_when_https_is_off():
    """OBVERSE_HTTPS=0 (a plain-HTTP test install) is allowed, and check --deploy says what that costs."""
    result = manage("check", "--deploy", "--fail-level", "WARNING", DJANGO_SECRET_KEY=STRONG_KEY, OBVERSE_HTTPS="0")
    assert result.returncode != 0
    for check_id in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check_id in result.stderr


# --- 3. CSRF on every form --------------------------------------------------------------------


def photo(seed: int = 1) -> SimpleUploadedFile:
    return SimpleUploadedFile("coin.png", pattern_png(seed), content_type="image/png")


def csrf_forms(world: World) -> dict[str, tuple[str | None, str, callable]]:
    """URL name → (role, URL, body factory): one POST per form of the site."""
    ids = world.ids()
    slug = world.concept.slug
    contact = {"requester_name": "Ada", "requester_email": "ada@example.org", "photo_licence": "none"}
    return {
        "identification:identify": (None, "/identify/", lambda: {"photo_1": photo(), "side_1": "unknown", **contact}),
        "identification:identify_example": (None, "/identify/examples/{example}/", dict),
        "identification:submission_recompute": (None, "/identify/{waiting}/recompute/", lambda: {"authority": slug}),
        "identification:submission_choose_object": (
            None,
            "/identify/{waiting}/object/",
            lambda: {"position": "0", "index": "0"},
        ),
        "identification:submission_none_match": (None, "/identify/{waiting}/none-match/", dict),
        "review:queue_next": ("volunteer", "/review/next/", dict),
        "review:claim": ("volunteer", "/review/{waiting}/claim/", dict),
        "review:release": ("volunteer", "/review/{waiting}/release/", dict),
        "review:review": ("volunteer", "/review/{waiting}/", lambda: {"decision": "match", "item_id": ids["item"]}),
        "review:proposal_approve": ("curator", "/review/proposals/{proposal}/approve/", dict),
        "review:proposal_reject": ("curator", "/review/proposals/{proposal}/reject/", lambda: {"reason": "No."}),
        "login": (None, "/accounts/login/", lambda: {"username": "volunteer", "password": "pw-volunteer"}),
        "logout": ("volunteer", "/accounts/logout/", dict),
    }


def csrf_token(client: Client) -> str:
    client.get("/accounts/login/")  # any page with a form sets the cookie
    return client.cookies["csrftoken"].value


def test_every_post_form_of_the_site_carries_a_token_and_is_in_the_csrf_test(world):
    """Walk the forms of every page as every role: each POST form has the token and its URL is tested below."""
    forms_seen: set[str] = set()
    for role in ("anonymous", "volunteer", "curator"):
        for url, html in _html_pages(world, role).items():
            if url.startswith("/admin/"):
                continue  # Django's own admin forms
            for form in FormFinder.find(html):
                if form["method"] != "post":
                    continue
                assert form["has_token"], f"{url}: a POST form without csrf_token (action {form['action']})"
                action = form["action"] or url
                forms_seen.add(resolve(action.split("?")[0]).view_name)
    assert forms_seen, "no POST form found: the walk itself is broken"
    untested = forms_seen - set(csrf_forms(world))
    assert not untested, f"POST forms with no CSRF test: {untested}"


class FormFinder(HTMLParser):
    """The forms of a page: method, action and whether a csrfmiddlewaretoken input is inside."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict] = []

    @classmethod
    def find(cls, html: str) -> list[dict]:
        finder = cls()
        finder.feed(html)
        return finder.forms

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form":
            self.forms.append(
                {"method": (values.get("method") or "get").lower(), "action": values.get("action"), "has_token": False}
            )
        elif tag == "input" and values.get("name") == "csrfmiddlewaretoken" and self.forms:
            self.forms[-1]["has_token"] = True


def test_a_post_without_a_csrf_token_is_refused_and_changes_nothing(world):
    """Every form's POST without the token: 403 and no write; the same POST with it is not refused."""
    problems = []
    for name, (role, url, body) in csrf_forms(world).items():
        url = url.format(**world.ids())
        with transaction.atomic():  # each form starts from the same state
            client = client_for(world.users[role] if role else None, enforce_csrf_checks=True)
            before = db_writes()
            refused = client.post(url, body())
            if refused.status_code != 403 or db_writes() != before:
                problems.append(f"{name}: {refused.status_code} without a token, or the database changed")
            if name == "login" and "_auth_user_id" in client.session:
                problems.append("login: signed in without a token")
            # With the token it goes through: the refusal above was the CSRF check's.
            accepted = client.post(url, {**body(), "csrfmiddlewaretoken": csrf_token(client)})
            if accepted.status_code == 403:
                problems.append(f"{name}: refused even with the token")
            transaction.set_rollback(True)
    assert not problems


def test_session_authenticated_api_posts_need_the_csrf_token(volunteer):
    client = client_for(volunteer, enforce_csrf_checks=True)
    response = client.post("/api/v1/submissions/", {"images": [photo()]})
    assert response.status_code == 403 and "CSRF" in response.json()["errors"]["non_field_errors"][0]
    assert Submission.objects.count() == 0
    response = client.post("/api/v1/submissions/", {"images": [photo()]}, HTTP_X_CSRFTOKEN=csrf_token(client))
    assert response.status_code == 201


def test_session_authenticated_api_actions_need_the_csrf_token(volunteer, world):
    client = client_for(volunteer, enforce_csrf_checks=True)
    url = f"/api/v1/submissions/{world.waiting.pk}/none-match/"
    response = client.post(url)
    assert response.status_code == 403 and "CSRF" in response.json()["errors"]["non_field_errors"][0]
    assert Submission.objects.get(pk=world.waiting.pk).none_match_at is None
    assert client.post(url, HTTP_X_CSRFTOKEN=csrf_token(client)).status_code == 200


def test_token_and_anonymous_api_uploads_need_no_csrf_token(volunteer):
    """No cookie authenticates these requests, so a forged cross-site request gains nothing it could not do itself."""
    token = Token.objects.create(user=volunteer)
    with_token = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Token {token.key}")
    assert with_token.post("/api/v1/submissions/", {"images": [photo()]}).status_code == 201
    anonymous = Client(enforce_csrf_checks=True)
    data = {"images": [photo(2)], "requester_name": "Ada", "requester_email": "ada@example.org"}
    assert anonymous.post("/api/v1/submissions/", data).status_code == 201
    assert Submission.objects.filter(submitted_by=volunteer).count() == 1


# --- 4. No open redirects ---------------------------------------------------------------------

EVIL = ["https://evil.example/", "//evil.example", "/\\evil.example", "https:evil.example", "\\\\evil.example/x"]


def off_site(location: str) -> bool:
    return not url_has_allowed_host_and_scheme(location, allowed_hosts={"testserver"})


@pytest.mark.parametrize("target", EVIL)
def test_login_never_redirects_off_site(client, volunteer, target):
    page = client.get("/accounts/login/", {"next": target}).content.decode()
    assert '<input type="hidden" name="next" value="">' in page  # the unsafe target is not carried on
    response = client.post("/accounts/login/", {"username": "volunteer", "password": "pw-volunteer", "next": target})
    assert response.status_code == 302 and "_auth_user_id" in client.session
    assert not off_site(response["Location"]), response["Location"]


@pytest.mark.parametrize("target", EVIL)
def test_logout_never_redirects_off_site(client, volunteer, target):
    client.force_login(volunteer)
    response = client.post(f"/accounts/logout/?next={target}", {"next": target})
    assert response.status_code == 302 and not off_site(response["Location"]), response["Location"]


def test_a_local_next_is_still_followed(client, volunteer):
    response = client.post("/accounts/login/", {"username": "volunteer", "password": "pw-volunteer", "next": "/items/"})
    assert response["Location"] == "/items/"
    assert off_site("https://evil.example/")  # and the helper above can say so


def test_views_that_redirect_ignore_a_next_parameter(world):
    client = client_for(world.users["volunteer"])
    for url in ("/review/{waiting}/claim/", "/review/next/", "/identify/{waiting}/recompute/"):
        evil = {"next": "https://evil.example/"}
        response = client.post(url.format(**world.ids()) + "?next=https://evil.example/", evil)
        assert response.status_code == 302 and not off_site(response["Location"]), url


# --- 5. Auto-escaping of everything people type -----------------------------------------------


def escaped(marker: str) -> str:
    return f"&lt;script&gt;alert(&#x27;{marker}&#x27;)&lt;/script&gt;"


# (role, URL, markers whose escaped text the page must show)
ESCAPING_PAGES = [
    ("anonymous", "/", ["title"]),
    ("anonymous", "/items/", ["title"]),
    ("anonymous", "/items/?q=<script>alert('query')</script>\"><img src=x onerror=alert(1)>", ["query"]),
    ("anonymous", "/items/{item}/", ["title", "legend", "description", "concept", "source"]),
    ("anonymous", "/specimens/{specimen}/", ["specimen", "legend"]),
    ("anonymous", "/concepts/{concept_kind}/{concept_slug}/", ["concept", "cdesc", "title"]),
    ("anonymous", "/identify/{waiting}/", ["title"]),
    ("volunteer", "/review/", []),
    ("volunteer", "/review/{waiting}/", ["notes", "title"]),
    ("volunteer", "/review/{rejected_submission}/", ["reason"]),
    ("curator", "/review/proposals/", ["title"]),
    ("curator", "/review/proposals/?status=rejected", ["reason"]),
    ("curator", "/review/proposals/{proposal}/", ["notes", "comment", "title"]),
    ("curator", "/review/dashboard/", []),
    ("curator", "/review/history/item/{item}/", ["reason"]),
    ("curator", "/review/history/specimen/{specimen}/", []),
]


def test_user_text_is_escaped_on_every_page_that_shows_it(world):
    ids = {**world.ids(), "rejected_submission": world.rejected.submission_id}
    clients = {role: client_for(user) for role, user in world.users.items()}
    problems = []
    for role, url, markers in ESCAPING_PAGES:
        response = clients[role].get(url.format(**ids))
        html = response.content.decode()
        if response.status_code != 200 or "<script>alert(" in html or "<img src=x onerror" in html:
            problems.append(f"{role} {url}: {response.status_code}, or hostile markup rendered raw")
        problems += [f"{role} {url}: {m} not shown escaped" for m in markers if escaped(m) not in html]
    assert not problems


def test_requester_name_is_escaped_for_curators(world):
    from identification.models import Submission as Model

    Model.objects.filter(pk=world.proposal.submission_id).update(requester_name="<b onmouseover=alert(1)>Eve</b>")
    html = client_for(world.users["curator"]).get(f"/review/proposals/{world.proposal.pk}/").content.decode()
    assert "&lt;b onmouseover=alert(1)&gt;Eve&lt;/b&gt;" in html and "<b onmouseover" not in html


# --- 6. Uploaded files are never served as HTML -----------------------------------------------

MARKUP_UPLOADS = {
    "html": b"<!DOCTYPE html><html><script>alert(1)</script></html>",
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><circle r="4"/></svg>',
    "svg with prolog": b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>',
    "html after a BOM and blanks": b"\xef\xbb\xbf  \n<html><body onload=alert(1)>",
    "gif polyglot": b"GIF89a\x01\x00\x01\x00\x00\x00\x00;<script>alert(1)</script>",
}


@pytest.mark.parametrize("kind", MARKUP_UPLOADS)
def test_markup_is_refused_at_upload_on_the_form_and_the_api(client, settings, kind):
    upload = {"photo_1": SimpleUploadedFile("coin.jpg", MARKUP_UPLOADS[kind], content_type="image/jpeg")}
    response = client.post("/identify/", {**upload, "requester_name": "Ada", "requester_email": "ada@example.org"})
    assert response.status_code == 400 and "not a photo" in response.content.decode()
    api = client.post(
        "/api/v1/submissions/",
        {
            "images": [SimpleUploadedFile("coin.png", MARKUP_UPLOADS[kind], content_type="image/png")],
            "requester_name": "Ada",
            "requester_email": "ada@example.org",
        },
    )
    assert api.status_code == 400 and "not a photo" in json.dumps(api.json())
    assert Submission.objects.count() == 0
    uploads = Path(settings.OBVERSE_PRIVATE_UPLOADS)
    assert not uploads.exists() or not any(p.is_file() for p in uploads.rglob("*"))


def test_a_photo_is_not_taken_for_markup(client):
    data = {"photo_1": SimpleUploadedFile("coin.jpg", jpeg_with_gps(), content_type="image/jpeg")}
    contact = {"requester_name": "Ada", "requester_email": "ada@example.org", "photo_licence": "none"}
    response = client.post("/identify/", {**data, **contact})
    submission = Submission.objects.get()
    assert response.status_code == 302 and response["Location"] == submission.get_absolute_url()
    assert submission.images.get().upload_name == "coin.jpg"


def _submit_and_process(client, django_capture_on_commit_callbacks, data: bytes) -> Submission:
    upload = SimpleUploadedFile("phone.jpg", data, content_type="image/jpeg")
    with django_capture_on_commit_callbacks(execute=True):  # the queue runs inline (sync) in tests
        response = client.post(
            "/identify/",
            # Publishable, so that approval copies the photo into the catalogue (checked below too).
            {
                "photo_1": upload,
                "requester_name": "Ada",
                "requester_email": "ada@example.org",
                "photo_licence": "cc-by-4.0",
            },
        )
    assert response.status_code == 302
    submission = Submission.objects.get()
    assert submission.images.get().original, "processing did not run"
    return submission


def test_raw_uploads_stay_private_and_derivatives_are_images_under_an_unguessable_folder(
    client, settings, fake_pipeline, django_capture_on_commit_callbacks
):
    submission = _submit_and_process(client, django_capture_on_commit_callbacks, jpeg_with_gps())
    image = submission.images.get()
    raw = Path(settings.OBVERSE_PRIVATE_UPLOADS) / image.upload_path
    media = Path(settings.MEDIA_ROOT)
    assert raw.is_file() and media not in raw.parents
    derived = [Path(f.path) for f in (image.original, image.cutout, image.upright)]
    assert all(p.suffix in {".jpg", ".png"} and p.is_file() for p in derived)
    assert all(str(submission.pk) in p.parts for p in derived) and submission.pk.version == 4
    # The production site serves no media at all (the web server does); nothing reaches the raw upload.
    for url in (image.original.url, f"/media/{image.upload_path}", f"/uploads/{image.upload_path}"):
        assert client.get(url).status_code == 404


@override_settings(ROOT_URLCONF=__name__)
def test_media_served_by_django_is_image_only_sandboxed_and_not_sniffed(client, settings):
    media = Path(settings.MEDIA_ROOT)
    media.mkdir(parents=True)
    (media / "coin.png").write_bytes(pattern_png(3))
    (media / "evil.html").write_bytes(MARKUP_UPLOADS["html"])
    (media / "evil.svg").write_bytes(MARKUP_UPLOADS["svg"])
    (media / "evil.png.txt").write_bytes(b"<script>alert(1)</script>")
    response = client.get("/media/coin.png")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Disposition"] == "inline"
    assert (
        "sandbox" in response["Content-Security-Policy"] and "default-src 'none'" in response["Content-Security-Policy"]
    )
    for name in ("evil.html", "evil.svg", "evil.png.txt"):
        assert client.get(f"/media/{name}").status_code == 404, name


def test_example_images_are_served_as_jpeg_without_sniffing(world, client):
    response = client.get(f"/identify/examples/{world.example_key}/image")
    assert response["Content-Type"] == "image/jpeg" and response["X-Content-Type-Options"] == "nosniff"


# --- 7. Privacy -------------------------------------------------------------------------------

PRIVATE_VALUES = [REQUESTER_EMAIL, REQUESTER_NAME, FINDSPOT, PROVENANCE]
PUBLIC_API = [
    "/api/v1/items/?format=json",
    "/api/v1/items/{item}/?format=json",
    "/api/v1/specimens/?format=json",
    "/api/v1/specimens/{specimen}/?format=json",
    "/api/v1/concepts/?format=json",
    "/api/v1/search/?q=hadrianus",
    "/api/v1/facets/",
    "/api/v1/submissions/{waiting}/",
    "/api/schema/?format=json",
    "/identify/{waiting}/status.json",
    # Linked data: NUDS, Nomisma RDF, Linked Art, IIIF (findspot and provenance never go out).
    *(f"/specimens/{{specimen}}.{fmt}" for fmt in ("xml", "ttl", "jsonld", "rdf")),
    *(f"/items/{{item}}.{fmt}" for fmt in ("xml", "ttl")),
    "/specimens/{specimen}/linked-art.json",
    "/iiif/specimens/{specimen}/manifest.json",
    "/iiif/items/{item}/collection.json",
]


def test_public_pages_and_the_api_never_show_private_values(world):
    client = Client()
    ids = world.ids()
    answers = _html_pages(world, "anonymous")
    answers.update({url: client.get(url.format(**ids)).content.decode() for url in PUBLIC_API})
    assert len(answers) >= len(PUBLIC_API) + 8
    leaks = {url: [v for v in PRIVATE_VALUES if v.lower() in text.lower()] for url, text in answers.items()}
    assert not {url: found for url, found in leaks.items() if found}


def test_volunteers_see_no_contact_details_findspot_or_provenance(world):
    pages = _html_pages(world, "volunteer")
    assert any(url.startswith("/review/") for url in pages)
    private = [REQUESTER_EMAIL, FINDSPOT, PROVENANCE]
    assert not {
        url: [v for v in private if v in html] for url, html in pages.items() if any(v in html for v in private)
    }


def test_curators_do_see_the_requester_and_the_findspot(world):
    """The positive control: the private values are really in the data the pages are built from."""
    client = client_for(world.users["curator"])
    assert REQUESTER_EMAIL in client.get(f"/review/proposals/{world.proposal.pk}/").content.decode()
    assert FINDSPOT in client.get(f"/admin/collection/specimen/{world.specimen.pk}/change/").content.decode()


def assert_no_metadata(path: Path) -> None:
    data = path.read_bytes()
    assert b"Exif\x00\x00" not in data and b"PhoneMaker" not in data, path
    with Image.open(path) as image:
        assert not image.getexif(), path
        assert not {"exif", "xmp", "XML:com.adobe.xmp", "comment"} & set(image.info), path


def test_the_test_photo_really_carries_gps():
    with Image.open(io.BytesIO(jpeg_with_gps())) as image:
        assert image.getexif().get_ifd(0x8825)  # the GPS block the tests below must not find again


def test_no_exif_or_gps_in_any_stored_derivative_of_a_submission_even_once_approved(
    client, settings, fake_pipeline, django_capture_on_commit_callbacks, curator
):
    submission = _submit_and_process(client, django_capture_on_commit_callbacks, jpeg_with_gps(orientation=6))
    stored = [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()]
    assert len(stored) == 3  # original, cut-out, upright
    # Approved, its photo joins the catalogue (copied, with a thumbnail and a new cut-out).
    item = make_item()
    for name in ("reviewer1", "reviewer2"):
        claim_and_review(submission, make_user(name), item=item)
    rs.proposal_approve(proposal_id=Proposal.objects.get(submission=submission).pk, user=curator)
    stored = [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()]
    assert len(stored) > 3 and SpecimenImage.objects.filter(specimen__item=item).exists()
    for file in stored:
        assert_no_metadata(file)


def test_no_exif_or_gps_in_any_stored_file_of_an_import(tmp_path, settings, fake_pipeline):
    (tmp_path / "img").mkdir()
    for side in ("obv", "rev"):
        (tmp_path / "img" / f"1.{side}.png").write_bytes(jpeg_with_gps(orientation=3))  # a JPEG, misnamed
        (tmp_path / "img" / f"2.{side}.png").write_bytes(jpeg_with_gps())
    rows = [generic_row(1), generic_row(2)]
    result = import_csv_file(write_csv(tmp_path / "coins.csv", GENERIC_HEADER, rows))
    assert result.images_added == 4
    for image in SpecimenImage.objects.all():
        indexing.catalogue_image_index(image_id=image.pk, pipeline=fake_pipeline)  # writes the cut-out
    stored = [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()]
    tiles = sum(len(specimen_image_tile_names(image=image)) for image in SpecimenImage.objects.all())
    assert len(stored) == 12 + tiles  # image, thumbnail and cut-out of 4 photos, and any IIIF tiles (none under 512 px)
    for file in stored:
        assert_no_metadata(file)


# --- The CSP in a real browser ----------------------------------------------------------------

# Injected by the browser itself (not by a page), so the CSP does not apply to it: it records every
# violation the page causes, scripts, styles and images alike.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + (e.blockedURI || "inline") + " " + (e.sample || ""));
});
"""


@pytest.mark.browser
@pytest.mark.slow
def test_the_pages_work_under_the_csp_in_a_real_browser(browser, live_server, world):
    """Debian's Chromium loads each kind of page as a curator: no CSP violation, no script error, and the
    styles computed from data (turned candidate photos, dashboard bars) are applied by the site's own script."""
    ids = {**world.ids(), "rejected_submission": world.rejected.submission_id}
    client = client_for(world.users["curator"])
    context = browser.new_context(base_url=live_server.url)
    context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)
    problems = {}
    for url in (
        "/",
        "/items/?q=hadrianus",
        "/items/{item}/",
        "/specimens/{specimen}/",
        "/identify/",
        "/identify/{waiting}/",
        "/review/{waiting}/",
        "/review/proposals/{proposal}/",
        "/review/dashboard/",
        "/review/history/item/{item}/",
        "/api/docs/",
        "/accounts/login/",
        "/admin/collection/item/{item}/change/",
    ):
        errors.clear()
        page.goto(url.format(**ids), wait_until="networkidle")
        found = errors + page.evaluate("window.__cspViolations")
        if found:
            problems[url] = found
    assert not problems
    page.goto(f"/review/{world.waiting.pk}/", wait_until="networkidle")
    assert page.eval_on_selector("#img-candidate", "img => getComputedStyle(img).transform") != "none"
    turned = page.eval_on_selector_all("#cand-strip img[data-rotate]", "s => s.map(i => i.style.transform)")
    assert turned and all(t.startswith("rotate(") for t in turned)
    page.goto(f"/identify/{world.waiting.pk}/", wait_until="networkidle")
    turned = page.eval_on_selector_all("img[data-rotate]", "s => s.map(i => i.style.transform)")
    assert all(t == "rotate(-30deg)" for t in turned)
    context.close()
