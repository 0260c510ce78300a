"""API v1 keeps its published contract: schemathesis fuzzes every operation against a live server.

Partners build on /api/v1/ from its OpenAPI document, so the document must be true. Schemathesis
(pinned in requirements.txt) reads the schema the server publishes, generates requests from it,
valid and invalid, and runs all its checks on the answers: no 500, every status and body as
documented, valid input accepted, invalid input refused. The server is pytest-django's live
server, in this process: the pipeline is the fake one of the other identification tests (tasks
run inline, so submissions reach their candidates) and the rate limits are off for the run.

The run is seeded and single-threaded, so CI repeats it exactly. ``make test`` runs a few examples
per operation; ``make fuzz-api`` runs many more (OBVERSE_FUZZ_EXAMPLES, OBVERSE_FUZZ_SEED).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.throttling import SimpleRateThrottle

from collection.models import ConceptKind, ItemStatus
from tests.factories import catalogue_image, make_concept, make_item

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("OBVERSE_FUZZ_EXAMPLES", "8"))
SEED = int(os.environ.get("OBVERSE_FUZZ_SEED", "20261207"))


@pytest.fixture
def catalogue(fake_pipeline):
    """A few published types with concepts, specimens and indexed images, and one draft type."""
    rome = make_concept(ConceptKind.MINT, "Rome")
    silver = make_concept(ConceptKind.MATERIAL, "Silver")
    hadrian = make_concept(ConceptKind.AUTHORITY, "Hadrian")
    items = [
        make_item(concepts=[rome, silver, hadrian], date_from=117, date_to=138, status=ItemStatus.PUBLISHED),
        make_item(concepts=[rome], date_from=-44, status=ItemStatus.PUBLISHED),
        make_item(status=ItemStatus.DRAFT),
    ]
    for seed, item in enumerate(items):
        catalogue_image(item, seed=seed, pipeline=fake_pipeline)
    return items


def schemathesis_command(base_url: str, token: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(ROOT / "tests" / "config" / "schemathesis.toml"),
        "run",
        f"{base_url}/api/schema/",
        # API v1, the versioned contract partners build on. The linked-data documents (IIIF, NUDS,
        # RDF, VoID) are in the same schema but follow their own standards; they are not fuzzed yet.
        "--include-path-regex",
        "^/api/v1/",
        "--url",
        base_url,
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-database",
        "none",  # no examples carried over from an earlier run: the same run every time
        "--workers",
        "1",
        "--no-color",
        "--output-sanitize",
        "false",  # show every value in a failure (the token is this test's own)
        # As a partner institution, with a token. Anonymous senders must also give a name and an email,
        # which OpenAPI cannot make required for some callers only: the fields' descriptions say it,
        # and tests/identification/test_api.py checks it.
        "--header",
        f"Authorization: Token {token}",
    ]


def test_every_operation_keeps_the_published_contract(live_server, catalogue, settings, monkeypatch, caplog):
    caplog.set_level(logging.ERROR, logger="django.request")  # thousands of refused requests are the point
    caplog.set_level(logging.WARNING, logger="django-q")  # and hundreds of submissions processed inline
    # Rate limits off for the run (DRF reads its rates once, at import, so the class is patched).
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"submissions_anon": None, "submissions_user": None})
    settings.OBVERSE_ANON_SUBMISSIONS_PER_HOUR = 10**6
    partner = User.objects.create_user("partner")
    token = Token.objects.create(user=partner).key
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.config.schemathesis_hooks", "PYTHONPATH": str(ROOT)}

    run = subprocess.run(
        schemathesis_command(live_server.url, token), cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800
    )

    report = run.stdout + run.stderr
    print(report)  # the figures, for `make fuzz-api` (pytest -s)
    assert run.returncode == 0, report
    counts = re.search(r"(\d+) generated, (\d+) passed", report)
    assert counts and int(counts[1]) == int(counts[2]) > 0, report  # it ran, every case passed
