"""The world every URL of the site can be built from, and what each role may do with each URL.

Shared by test_permission_matrix.py (statuses, no write where refused) and test_security.py (every
page rendered with hostile text and private values). The ``world`` fixture is in conftest.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib.auth.models import Group, User
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django_q.models import OrmQ, Schedule, Task
from PIL import Image
from rest_framework.authtoken.models import Token

from collection.models import EMBEDDING_DIMENSIONS, Item, Specimen
from collection.roles import ensure_role_groups
from collection.search import item_refresh_search
from collection.services import specimen_image_tiles_make
from identification.models import Submission
from review import services as rs
from review.models import Proposal
from tests.factories import (
    claim_and_review,
    make_concept,
    make_image,
    make_item,
    make_source,
    make_specimen,
    make_submission,
    make_user,
)

ROLES = ("anonymous", "volunteer", "curator", "admin")
LOGIN = "login"  # 302 to /accounts/login/
ADMIN_LOGIN = "admin-login"  # 302 to /admin/login/
HEALTH = "health"  # 200, or 503 when the models folder is not prepared: the same for every role
IGNORED_TABLES = {"django_session", "obverse_cache"}

# Distinctive values: test_security.py renders every page and API answer with them.
XSS = "<script>alert('{0}')</script>\"><img src=x onerror=alert('{0}')>"
REQUESTER_EMAIL = "canary.requester@private.example"
REQUESTER_NAME = "Canary Requestername"
FINDSPOT = "Canary Findspot Hoard"
PROVENANCE = "Canary Provenance Auction"


@dataclass
class World:
    """The objects every URL of the site can be built from, and the users of each role."""

    users: dict[str, User | None]
    item: Item
    specimen: Specimen
    concept: object
    source: object
    waiting: Submission
    proposal: Proposal
    rejected: Proposal
    example_key: str
    objects: dict[str, object] = field(default_factory=dict)  # admin model → primary key in its admin URLs

    def ids(self) -> dict[str, object]:
        return {
            "item": self.item.pk,
            "specimen": self.specimen.pk,
            "concept_kind": self.concept.kind,
            "concept_slug": self.concept.slug,
            "concept": self.concept.pk,
            "waiting": self.waiting.pk,
            "proposal": self.proposal.pk,
            "example": self.example_key,
            "item_ct": ContentType.objects.get_for_model(Item).pk,
            **{f"obj_{name}": pk for name, pk in self.objects.items()},
        }


def build_world(settings, tmp_path, *, volunteer: User, curator: User, admin_user: User) -> World:
    """A small catalogue and review state with hostile text and private values in every user-supplied field."""
    ensure_role_groups()  # the curator group's catalogue permissions, as in a deployment
    source = make_source(name=XSS.format("source"), credit=XSS.format("credit"))
    concept = make_concept("authority", label="Hadrianus " + XSS.format("concept"), description=XSS.format("cdesc"))
    item = make_item(
        concepts=[concept],
        title="Aureus " + XSS.format("title"),
        obverse_legend="HADRIANVS " + XSS.format("legend"),
        description=XSS.format("description"),
        source=source,
    )
    item_refresh_search(item_ids=[item.pk])
    specimen = make_specimen(
        item, title=XSS.format("specimen"), findspot=FINDSPOT, provenance=PROVENANCE, source=source
    )
    catalogue_image = make_image(specimen)
    specimen_image_tiles_make(image_id=catalogue_image.pk)  # as an import does: the IIIF URLs then answer
    waiting = make_submission([item], email=REQUESTER_EMAIL)
    Submission.objects.filter(pk=waiting.pk).update(requester_name=REQUESTER_NAME, notes=XSS.format("notes"))
    # As the pipeline leaves it: an embedding to search again with when the candidates are narrowed.
    waiting.images.update(embedding=np.full(EMBEDDING_DIMENSIONS, EMBEDDING_DIMENSIONS**-0.5, dtype=np.float32))
    waiting.candidates.update(matched_image=catalogue_image)  # pages then show the turned catalogue photo
    reviewers = [make_user("reviewer1"), make_user("reviewer2")]
    proposed = make_submission([item], email=REQUESTER_EMAIL)
    Submission.objects.filter(pk=proposed.pk).update(requester_name=REQUESTER_NAME, notes=XSS.format("notes"))
    for reviewer in reviewers:
        claim_and_review(proposed, reviewer, item=item, comment=XSS.format("comment"))
    turned_down = make_submission([item], email=REQUESTER_EMAIL)
    for reviewer in reviewers:
        claim_and_review(turned_down, reviewer, item=item)
    rejected = Proposal.objects.get(submission=turned_down)
    rs.proposal_reject(proposal_id=rejected.pk, user=curator, reason=XSS.format("reason"))

    settings.OBVERSE_DEMO_DIR = tmp_path / "demo"
    examples = tmp_path / "demo" / "examples"
    examples.mkdir(parents=True)
    Image.new("RGB", (64, 64), "peru").save(examples / "example-01-DEMO.1.obv.jpg")
    (examples / "examples.json").write_text(
        json.dumps([{"file": "example-01-DEMO.1.obv.jpg", "record_id": "DEMO-1", "side": "obverse"}])
    )

    now = timezone.now()
    task = {"func": "math.floor", "started": now, "stopped": now + timedelta(seconds=1), "name": "t"}
    objects = {
        "group": Group.objects.get(name="curator").pk,
        "user": volunteer.pk,
        "token": Token.objects.create(user=admin_user).user_id,  # the token admin addresses tokens by user
        "schedule": Schedule.objects.create(func="math.floor", name="nightly").pk,
        "success": Task.objects.create(id="a" * 32, success=True, **task).pk,
        "failure": Task.objects.create(id="b" * 32, success=False, **{**task, "name": "f"}).pk,
        "ormq": OrmQ.objects.create(key="obverse", payload="x", lock=now).pk,
        **_login_records(now),
        "source": source.pk,
        "concept": concept.pk,
        "item": item.pk,
        "specimen": specimen.pk,
        "specimenimage": specimen.images.get().pk,
        "submission": waiting.pk,
    }
    return World(
        users={"anonymous": None, "volunteer": volunteer, "curator": curator, "admin": admin_user},
        item=item,
        specimen=specimen,
        concept=concept,
        source=source,
        waiting=waiting,
        proposal=Proposal.objects.get(submission=proposed),
        rejected=rejected,
        example_key="example-01-demo1obv",
        objects=objects,
    )


def _login_records(now) -> dict[str, int]:
    """One row of each django-axes table (failed attempts, the access and failure logs), for their admin pages."""
    seen = {"user_agent": "Canary Browser", "ip_address": "198.51.100.7", "username": "someone", "path_info": "/"}
    return {
        "accessattempt": AccessAttempt.objects.create(
            attempt_time=now, get_data="", post_data="", failures_since_start=1, http_accept="*/*", **seen
        ).pk,
        "accesslog": AccessLog.objects.create(attempt_time=now, http_accept="*/*", **seen).pk,
        "accessfailurelog": AccessFailureLog.objects.create(attempt_time=now, http_accept="*/*", **seen).pk,
    }


# --- The matrix -------------------------------------------------------------------------------


def everyone(status) -> dict[str, object]:
    return dict.fromkeys(ROLES, status)


def signed_in(status, *, anonymous=LOGIN, volunteer=None) -> dict[str, object]:
    """Login required; ``volunteer`` overrides the status for a volunteer (e.g. 403 on curator pages)."""
    return {
        "anonymous": anonymous,
        "volunteer": status if volunteer is None else volunteer,
        "curator": status,
        "admin": status,
    }


def staff(status, *, curator=None) -> dict[str, object]:
    """Admin site: whoever is not staff is sent to the admin login; ``curator`` when it differs from a superuser."""
    return {
        "anonymous": ADMIN_LOGIN,
        "volunteer": ADMIN_LOGIN,
        "curator": status if curator is None else curator,
        "admin": status,
    }


@dataclass(frozen=True)
class Row:
    """One URL pattern: a concrete URL, the expected status per role for GET and for POST, the POST body."""

    url: str
    get: dict[str, object]
    post: dict[str, object]
    data: dict = field(default_factory=dict)
    may_write: bool = True  # False: even an allowed POST (an empty admin form) must not write


PUBLIC_PAGE = {"get": everyone(200), "post": everyone(405)}
# DRF: IsAuthenticatedOrReadOnly refuses an anonymous write (403) before the method is looked at.
READ_ONLY_API = {"get": everyone(200), "post": {**everyone(405), "anonymous": 403}}
CURATOR_PAGE = {"get": signed_in(200, volunteer=403), "post": signed_in(405)}
CURATOR_ACTION = {"get": signed_in(405), "post": signed_in(302, volunteer=403)}
VOLUNTEER_ACTION = {"get": signed_in(405), "post": signed_in(302)}

MATRIX: dict[str, Row] = {
    # Public pages of the collection.
    "": Row("/", **PUBLIC_PAGE),
    "items/": Row("/items/", **PUBLIC_PAGE),
    "items/<int:pk>/": Row("/items/{item}/", **PUBLIC_PAGE),
    "specimens/<int:pk>/": Row("/specimens/{specimen}/", **PUBLIC_PAGE),
    "concepts/<slug:kind>/<slug:slug>/": Row("/concepts/{concept_kind}/{concept_slug}/", **PUBLIC_PAGE),
    # Linked data (collection.linked_data): read-only documents for anyone; POST is not a method they have.
    r"^specimens/(?P<pk>[0-9]+)\.(?P<fmt>xml|ttl|jsonld|rdf)$": Row("/specimens/{specimen}.ttl", **PUBLIC_PAGE),
    r"^items/(?P<pk>[0-9]+)\.(?P<fmt>xml|ttl|jsonld|rdf)$": Row("/items/{item}.xml", **PUBLIC_PAGE),
    "specimens/<int:pk>/linked-art.json": Row("/specimens/{specimen}/linked-art.json", **PUBLIC_PAGE),
    "specimens/<int:pk>/viewer/": Row("/specimens/{specimen}/viewer/", **PUBLIC_PAGE),
    "iiif/specimens/<int:pk>/manifest.json": Row("/iiif/specimens/{specimen}/manifest.json", **PUBLIC_PAGE),
    "iiif/items/<int:pk>/collection.json": Row("/iiif/items/{item}/collection.json", **PUBLIC_PAGE),
    "iiif/images/<int:pk>": Row("/iiif/images/{obj_specimenimage}", get=everyone(303), post=everyone(405)),
    "iiif/images/<int:pk>/info.json": Row("/iiif/images/{obj_specimenimage}/info.json", **PUBLIC_PAGE),
    "iiif/images/<int:pk>/<str:region>/<str:size>/<str:rotation>/<str:filename>": Row(
        "/iiif/images/{obj_specimenimage}/full/max/0/default.jpg", **PUBLIC_PAGE
    ),
    r"^linked-data/void\.(?P<fmt>ttl|jsonld|rdf)$": Row("/linked-data/void.rdf", **PUBLIC_PAGE),
    "linked-data/void": Row("/linked-data/void", **PUBLIC_PAGE),
    # The dump exists once `manage.py export_rdf` has run; not in this world.
    "linked-data/nomisma.rdf": Row("/linked-data/nomisma.rdf", get=everyone(404), post=everyone(405)),
    # Identify: open to everyone; an empty form is refused (400) and stores nothing.
    "identify/": Row("/identify/", get=everyone(200), post=everyone(400), data={"notes": "No photo."}),
    "identify/examples/<slug:key>/": Row("/identify/examples/{example}/", get=everyone(405), post=everyone(302)),
    "identify/examples/<slug:key>/image": Row("/identify/examples/{example}/image", **PUBLIC_PAGE),
    # A submission's pages are reached by its unguessable UUID (the requester's link).
    "identify/<uuid:pk>/": Row("/identify/{waiting}/", **PUBLIC_PAGE),
    "identify/<uuid:pk>/status.json": Row("/identify/{waiting}/status.json", **PUBLIC_PAGE),
    "identify/<uuid:pk>/recompute/": Row(
        "/identify/{waiting}/recompute/", get=everyone(405), post=everyone(302), data={"authority": ""}
    ),
    "identify/<uuid:pk>/object/": Row(
        "/identify/{waiting}/object/", get=everyone(405), post=everyone(302), data={"position": "0", "index": "0"}
    ),
    "identify/<uuid:pk>/none-match/": Row("/identify/{waiting}/none-match/", get=everyone(405), post=everyone(302)),
    # Review: volunteers; proposals, dashboard and history: curators.
    "review/": Row("/review/", get=signed_in(200), post=signed_in(405)),
    "review/next/": Row("/review/next/", **VOLUNTEER_ACTION),
    "review/dashboard/": Row("/review/dashboard/", **CURATOR_PAGE),
    "review/proposals/": Row("/review/proposals/", **CURATOR_PAGE),
    "review/proposals/<int:pk>/": Row("/review/proposals/{proposal}/", **CURATOR_PAGE),
    "review/proposals/<int:pk>/approve/": Row("/review/proposals/{proposal}/approve/", **CURATOR_ACTION),
    "review/proposals/<int:pk>/reject/": Row(
        "/review/proposals/{proposal}/reject/", **CURATOR_ACTION, data={"reason": "Not this type."}
    ),
    "review/history/<slug:kind>/<int:pk>/": Row("/review/history/item/{item}/", **CURATOR_PAGE),
    "review/<uuid:pk>/": Row(
        "/review/{waiting}/", get=signed_in(200), post=signed_in(302), data={"decision": "unsure"}
    ),
    "review/<uuid:pk>/claim/": Row("/review/{waiting}/claim/", **VOLUNTEER_ACTION),
    "review/<uuid:pk>/release/": Row("/review/{waiting}/release/", **VOLUNTEER_ACTION),
    # API v1: the catalogue is read-only for everyone.
    "api/v1/": Row("/api/v1/", **READ_ONLY_API),
    "api/v1/<drf_format_suffix:format>": Row("/api/v1/.json", **READ_ONLY_API),
    "api/v1/facets/": Row("/api/v1/facets/", **READ_ONLY_API),
    "api/v1/search/": Row("/api/v1/search/?q=hadrianus", **READ_ONLY_API),
    **{
        route.format(name=name): Row(url.format(name=name, pk="{" + pk + "}"), **READ_ONLY_API)
        for name, pk in (("items", "item"), ("specimens", "specimen"), ("concepts", "concept"))
        for route, url in (
            ("api/v1/^{name}/$", "/api/v1/{name}/"),
            ("api/v1/^{name}\\.(?P<format>[a-z0-9]+)/?$", "/api/v1/{name}.json"),
            ("api/v1/^{name}/(?P<pk>[^/.]+)/$", "/api/v1/{name}/{pk}/"),
            ("api/v1/^{name}/(?P<pk>[^/.]+)\\.(?P<format>[a-z0-9]+)/?$", "/api/v1/{name}/{pk}.json"),
        )
    },
    # Submissions API: anyone may submit (an empty one is refused, 400) and poll by UUID.
    "api/v1/submissions/": Row("/api/v1/submissions/", get=everyone(405), post=everyone(400)),
    "api/v1/submissions/<uuid:pk>/": Row("/api/v1/submissions/{waiting}/", **PUBLIC_PAGE),
    # The sender's actions (the UUID grants them); an empty object choice is refused.
    "api/v1/submissions/<uuid:pk>/candidates/": Row(
        "/api/v1/submissions/{waiting}/candidates/", get=everyone(405), post=everyone(200)
    ),
    "api/v1/submissions/<uuid:pk>/objects/": Row(
        "/api/v1/submissions/{waiting}/objects/", get=everyone(405), post=everyone(400)
    ),
    "api/v1/submissions/<uuid:pk>/none-match/": Row(
        "/api/v1/submissions/{waiting}/none-match/", get=everyone(405), post=everyone(200)
    ),
    "api/schema/": Row("/api/schema/", **PUBLIC_PAGE),
    "api/docs/": Row("/api/docs/", **PUBLIC_PAGE),
    # Any other /api/ URL: a 404 in the API's error shape, whatever the method.
    "^api/(?P<path>(?:[\\s\\S]*/)?)$": Row("/api/v2/items/", get=everyone(404), post=everyone(404)),
    # Accounts: an empty login form is shown again (200); logout is POST only.
    "accounts/login/": Row("/accounts/login/", get=everyone(200), post=everyone(200)),
    "accounts/logout/": Row("/accounts/logout/", get=everyone(405), post=everyone(302)),
    "healthz": Row("/healthz", get=everyone(HEALTH), post=everyone(405)),
    "favicon.ico": Row("/favicon.ico", get=everyone(301), post=everyone(405)),
    # Admin site (the per-model rows are added below).
    "admin/": Row("/admin/", get=staff(200), post=staff(200)),
    "admin/login/": Row(
        "/admin/login/",
        get={"anonymous": 200, "volunteer": 200, "curator": 302, "admin": 302},
        post=everyone(200),
    ),
    # Staff are logged out by POST (then sent to LOGOUT_REDIRECT_URL); anyone else is sent to the index.
    "admin/logout/": Row(
        "/admin/logout/",
        get={"anonymous": 302, "volunteer": 302, "curator": 405, "admin": 405},
        post=everyone(302),
    ),
    "admin/password_change/": Row("/admin/password_change/", get=staff(200), post=staff(200)),
    "admin/password_change/done/": Row("/admin/password_change/done/", get=staff(200), post=staff(405)),
    # Without its query parameters the autocomplete refuses everyone, staff included.
    "admin/autocomplete/": Row("/admin/autocomplete/", get=staff(403), post=staff(405)),
    "admin/jsi18n/": Row("/admin/jsi18n/", get=staff(200), post=staff(405)),
    "admin/r/<path:content_type_id>/<path:object_id>/": Row(
        "/admin/r/{item_ct}/{item}/", get=staff(302), post=staff(302)
    ),
    # Curators have no permission on django_q/auth/axes models, so those apps do not exist for them.
    "admin/^(?P<app_label>auth|authtoken|django_q|axes|collection|identification)/$": Row(
        "/admin/collection/", get=staff(200), post=staff(200)
    ),
    "admin/(?P<url>.*)$": Row("/admin/no-such-page/", get=staff(404), post=staff(404)),
}

# Registered admin models: (app/model path, key in World.objects, curator may use it, what a superuser
# may do: "all", or "view" for Django-Q's task results, or "no-add" for its queue). Curators edit the
# catalogue only.
ADMIN_MODELS = [
    ("auth/group", "group", False, "all"),
    ("auth/user", "user", False, "all"),
    ("authtoken/tokenproxy", "token", False, "all"),
    ("django_q/schedule", "schedule", False, "all"),
    ("django_q/success", "success", False, "view"),
    ("django_q/failure", "failure", False, "view"),
    ("django_q/ormq", "ormq", False, "no-add"),
    # django-axes' records of failed logins (superusers unlock an address by deleting its attempts).
    ("axes/accessattempt", "accessattempt", False, "view"),
    ("axes/accesslog", "accesslog", False, "view"),
    ("axes/accessfailurelog", "accessfailurelog", False, "view"),
    ("collection/source", "source", True, "all"),
    ("collection/concept", "concept", True, "all"),
    ("collection/item", "item", True, "all"),
    ("collection/specimen", "specimen", True, "all"),
    ("collection/specimenimage", "specimenimage", True, "all"),
    ("identification/submission", "submission", False, "all"),
]


def _admin_rows() -> dict[str, Row]:
    """Five views per model. An empty POST writes nothing: forms come back with errors, deletion needs post=yes."""
    rows = {}
    for path, key, curator_may, superuser in ADMIN_MODELS:
        base = f"/admin/{path}/"
        obj = f"{base}{{obj_{key}}}/"
        curator = None if curator_may else 403
        add = 403 if superuser in {"view", "no-add"} else 200
        change_post = 302 if superuser == "view" else 200  # a view-only form is not saved; back to the list
        for route, url, get, post in (
            (f"admin/{path}/", base, 200, 200),
            (f"admin/{path}/add/", f"{base}add/", add, add),
            (f"admin/{path}/<path:object_id>/history/", f"{obj}history/", 200, 200),
            (f"admin/{path}/<path:object_id>/delete/", f"{obj}delete/", 200, 200),
            (f"admin/{path}/<path:object_id>/change/", f"{obj}change/", 200, change_post),
        ):
            # Saving a view-only task result re-saves it and logs the change (superusers only).
            writes = superuser == "view" and route.endswith("/change/")
            rows[route] = Row(url, get=staff(get, curator=curator), post=staff(post, curator=curator), may_write=writes)
        # The bare object URL redirects to its change page (which then checks permissions).
        rows[f"admin/{path}/<path:object_id>/"] = Row(obj, get=staff(302), post=staff(302), may_write=False)
    rows["admin/auth/user/<id>/password/"] = Row(
        "/admin/auth/user/{obj_user}/password/",
        get=staff(200, curator=403),
        post=staff(200, curator=403),
        may_write=False,
    )
    return rows


MATRIX.update(_admin_rows())


def url_patterns(resolver=None, prefix: str = "") -> list[str]:
    """Every URL pattern of the site as its full route, read recursively from the resolver."""
    resolver = resolver or get_resolver()
    routes = []
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLResolver):
            routes += url_patterns(pattern, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            routes.append(prefix + str(pattern.pattern))
    return routes


def db_writes() -> dict[str, tuple[int, int, int]]:
    """Rows inserted, updated and deleted so far in this transaction, per table (PostgreSQL's counters)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_xact_user_tables "
            "WHERE n_tup_ins + n_tup_upd + n_tup_del > 0"
        )
        return {name: tuple(counts) for name, *counts in cursor.fetchall() if name not in IGNORED_TABLES}


def client_for(user: User | None, **kwargs) -> Client:
    client = Client(**kwargs)
    if user is not None:
        client.force_login(user)
    return client


def is_allowed(expected: object) -> bool:
    """Whether a request with this expected outcome is allowed to change anything."""
    return expected in {200, 201, 302} and expected not in {LOGIN, ADMIN_LOGIN}


def check(response, expected: object) -> str | None:
    """None when the response is what the matrix expects, else a readable mismatch."""
    status = response.status_code
    location = response.get("Location", "")
    if expected == LOGIN:
        ok = status == 302 and location.startswith("/accounts/login/")
    elif expected == ADMIN_LOGIN:
        ok = status == 302 and location.startswith("/admin/login/")
    elif expected == HEALTH:
        ok = status in {200, 503}
    else:
        ok = status == expected
    if ok and 300 <= status < 400:
        # No redirect of the site leaves it (no open redirect, whatever the URL).
        ok = url_has_allowed_host_and_scheme(location, allowed_hosts={"testserver"})
    return None if ok else f"expected {expected}, got {status} {location}".strip()
