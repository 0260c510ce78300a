"""Every URL pattern × anonymous, volunteer, curator, admin × GET and POST: status, and no write where refused.

The matrix itself and the world its URLs are built from are in tests/config/world.py.

The URL patterns are read from the root resolver, recursively, so a new URL that is not in the matrix
below (or a matrix entry whose URL is gone) fails ``test_the_matrix_covers_every_url_pattern``.
tests/review/test_permissions.py checks the review URLs in more depth (claims,
outsiders); here they are one row each among all the others: pages, API, admin, health, schema.

"Nothing changed in the database" is read from PostgreSQL's own per-transaction counters
(``pg_stat_xact_user_tables``): every row inserted, updated or deleted in any table counts, so an
update that leaves row counts equal is caught too. Sessions and the cache (throttle counters) are
the only tables a refused request may touch.
"""

from __future__ import annotations

import copy

import pytest
from django.db import transaction

from collection.models import Item, Specimen
from tests.config.world import MATRIX, ROLES, check, client_for, db_writes, is_allowed, url_patterns
from tests.factories import (
    make_item,
)

# Approvals index the new catalogue images inline: with the fake pipeline, never the real models.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fake_pipeline")]

# --- Tests ------------------------------------------------------------------------------------


def test_the_matrix_covers_every_url_pattern():
    routes = set(url_patterns())
    missing = sorted(routes - set(MATRIX))
    stale = sorted(set(MATRIX) - routes)
    assert not missing, f"URL patterns missing from the permission matrix: {missing}"
    assert not stale, f"matrix rows for URL patterns that no longer exist: {stale}"


def test_the_write_counter_sees_an_update_that_keeps_row_counts():
    """The matrix's "nothing changed" check is itself able to fail."""
    item = make_item()
    before = db_writes()
    Item.objects.filter(pk=item.pk).update(title="Changed")
    assert db_writes() != before


@pytest.mark.slow  # about 1,100 requests (the admin pages are most of the time): ~70 s on two cores
@pytest.mark.parametrize("role", ROLES)
def test_every_url_for_every_role(world, role):
    """Each row, GET and POST, as one role: the status the matrix says, and no write unless allowed."""
    ids = world.ids()
    client = client_for(world.users[role])
    signed_in_cookies = copy.copy(client.cookies)
    problems = []
    for route, row in MATRIX.items():
        url = row.url.format(**ids)
        for method in ("get", "post"):
            expected = getattr(row, method)[role]
            # Each request starts from the same state: what an allowed request changes (a logout
            # included) is rolled back, and the client gets its signed-in session cookie back.
            client.cookies = copy.copy(signed_in_cookies)
            with transaction.atomic():
                before = db_writes()
                response = getattr(client, method)(url, row.data if method == "post" else {})
                problem = check(response, expected)
                if problem:
                    problems.append(f"{method.upper()} {url} ({route}): {problem}")
                elif (method == "get" or not row.may_write or not is_allowed(expected)) and db_writes() != before:
                    problems.append(f"{method.upper()} {url} ({route}): changed the database ({expected})")
                transaction.set_rollback(True)
    assert not problems, f"{role}:\n" + "\n".join(problems)


def test_allowed_requests_really_act(world):
    """The counterpart of the refusals: the same requests by the allowed role do change things."""
    curator = client_for(world.users["curator"])
    curator.post(f"/review/proposals/{world.proposal.pk}/approve/")
    assert Specimen.objects.filter(record_id__startswith="OBV-").count() == 1
    volunteer = client_for(world.users["volunteer"])
    volunteer.post(f"/review/{world.waiting.pk}/claim/")
    assert world.waiting.claims.filter(volunteer=world.users["volunteer"], released_at__isnull=True).exists()
