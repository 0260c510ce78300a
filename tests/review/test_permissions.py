"""Every review URL × every role: who may see and do what, and that a refusal changes nothing."""

from __future__ import annotations

import pytest
from django.db import transaction

from collection.models import Item, Specimen, SpecimenImage
from identification.models import Submission
from review.models import Claim, Proposal, Review, ReviewEvent
from tests.factories import claim_and_review, make_item, make_submission, make_user

# Approvals index the new catalogue images inline: with the fake pipeline, never the real models.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fake_pipeline")]

ROLES = ("anonymous", "outsider", "volunteer", "curator", "admin")
VOLUNTEER_ROLES = {"volunteer", "curator", "admin"}
CURATOR_ROLES = {"curator", "admin"}


@pytest.fixture
def world(volunteer, curator, admin_user):
    """A waiting submission, a pending proposal, and the users of every role."""
    reviewers = [make_user("reviewer1"), make_user("reviewer2")]
    item = make_item()
    waiting = make_submission([item])
    proposed = make_submission([item])
    for reviewer in reviewers:
        claim_and_review(proposed, reviewer, item=item)
    return {
        "users": {
            "anonymous": None,
            "outsider": make_user("outsider", group=None),
            "volunteer": volunteer,
            "curator": curator,
            "admin": admin_user,
        },
        "item": item,
        "waiting": waiting,
        "proposal": Proposal.objects.get(submission=proposed),
    }


def snapshot() -> dict:
    """Everything a review action could change."""
    return {
        "statuses": sorted(Submission.objects.values_list("pk", "status")),
        "proposals": sorted(Proposal.objects.values_list("pk", "status", "reason")),
        "claims": sorted(Claim.objects.values_list("pk", "released_at", "expires_at")),
        "reviews": Review.objects.count(),
        "events": ReviewEvent.objects.count(),
        "specimens": Specimen.objects.count(),
        "images": SpecimenImage.objects.count(),
        "items": Item.objects.count(),
    }


# (name, method, path template, data, allowed roles, status when allowed)
ENDPOINTS = [
    ("queue", "get", "/review/", {}, VOLUNTEER_ROLES, 200),
    ("queue_next", "post", "/review/next/", {}, VOLUNTEER_ROLES, 302),
    ("review_page", "get", "/review/{waiting}/", {}, VOLUNTEER_ROLES, 200),
    ("claim", "post", "/review/{waiting}/claim/", {}, VOLUNTEER_ROLES, 302),
    ("release", "post", "/review/{waiting}/release/", {}, VOLUNTEER_ROLES, 302),
    ("decide", "post", "/review/{waiting}/", {"decision": "unsure"}, VOLUNTEER_ROLES, 302),
    ("proposals", "get", "/review/proposals/", {}, CURATOR_ROLES, 200),
    ("proposal_detail", "get", "/review/proposals/{proposal}/", {}, CURATOR_ROLES, 200),
    ("approve", "post", "/review/proposals/{proposal}/approve/", {}, CURATOR_ROLES, 302),
    ("reject", "post", "/review/proposals/{proposal}/reject/", {"reason": "No."}, CURATOR_ROLES, 302),
    ("dashboard", "get", "/review/dashboard/", {}, CURATOR_ROLES, 200),
    ("history", "get", "/review/history/item/{item}/", {}, CURATOR_ROLES, 200),
]


@pytest.mark.parametrize(
    ("name", "method", "path", "data", "allowed", "ok_status"), ENDPOINTS, ids=[e[0] for e in ENDPOINTS]
)
def test_every_url_for_every_role(client, world, name, method, path, data, allowed, ok_status):
    """Anonymous → login redirect, wrong role → 403, and in both cases the database is untouched."""
    url = path.format(waiting=world["waiting"].pk, proposal=world["proposal"].pk, item=world["item"].pk)
    for role in ROLES:
        user = world["users"][role]
        # Each role starts from the same state: what an allowed role changes is rolled back.
        with transaction.atomic():
            client.logout()
            if user is not None:
                client.force_login(user)
                if name in {"release", "decide"} and role in VOLUNTEER_ROLES:
                    client.post(f"/review/{world['waiting'].pk}/claim/")  # these act on one's own claim
            before = snapshot()
            response = getattr(client, method)(url, data)
            if role == "anonymous":
                assert response.status_code == 302, role
                assert response.url.startswith("/accounts/login/")
                assert snapshot() == before, f"{role}: a refused request changed the database"
            elif role in allowed:
                assert response.status_code == ok_status, role
            else:
                assert response.status_code == 403, role
                assert snapshot() == before, f"{role}: a refused request changed the database"
            transaction.set_rollback(True)


def test_allowed_actions_really_act(client, world):
    """The counterpart of the refusals above: for a curator the same requests do change things."""
    client.force_login(world["users"]["curator"])
    client.post(f"/review/proposals/{world['proposal'].pk}/approve/")
    assert Specimen.objects.filter(item=world["item"]).count() == 1
    client.post(f"/review/{world['waiting'].pk}/claim/")
    assert Claim.objects.active().filter(submission=world["waiting"]).count() == 1
