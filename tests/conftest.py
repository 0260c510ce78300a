"""Shared fixtures: personas, the fake pipeline, the real-data folders, Chromium, and a clean state per test.

Factories (rows, pictures) are in tests/factories.py, canned files in tests/samples.py; no test
module imports another.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from django.contrib.auth.models import User
from django.db import connection

from tests.browser import CHROMIUM_ARGS, missing_browser
from tests.factories import make_user
from tests.fakes import FakePipeline, fake_get_pipeline

# One thread for torch and ONNX Runtime in every test process (and the subprocesses it starts),
# however the suite runs. Two reasons: results that come out of training or floating-point
# reductions must not depend on how the suite is run (a side test once passed alone, with two
# threads, and failed under `make test`, with one per xdist worker); and two workers each using
# every core oversubscribed this 2-core CPU (8.1 min against 6.3 min with one thread each).
TEST_THREADS = "1"
os.environ["OMP_NUM_THREADS"] = TEST_THREADS
os.environ["OBVERSE_ONNX_THREADS"] = TEST_THREADS
torch.set_num_threads(int(TEST_THREADS))

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
ANS_DIR = SHARED_DATA / "ans-roman"
CUTOUTS_DIR = SHARED_DATA / "collector-cutouts"


@pytest.fixture(scope="session")
def ans_dir() -> Path:
    if not (ANS_DIR / "labels.csv").exists():
        pytest.skip(f"real data not found at {ANS_DIR} (see ../shared/data/README.md)")
    return ANS_DIR


@pytest.fixture(scope="session")
def cutouts_dir() -> Path:
    if not (CUTOUTS_DIR / "images").exists():
        pytest.skip(f"real data not found at {CUTOUTS_DIR} (see ../shared/data/README.md)")
    return CUTOUTS_DIR


@pytest.fixture(autouse=True)
def _seeded_random_state():
    """Each test starts from the same global random state, whatever ran before it in its process.

    Code under test should take its own seeded generators; this makes any that does not
    reproducible instead of dependent on test order.
    """
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _isolated_media(settings, tmp_path):
    """Every test writes media and private uploads into its own temporary folder."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.OBVERSE_PRIVATE_UPLOADS = str(tmp_path / "uploads")


@pytest.fixture
def volunteer(db) -> User:
    return make_user("volunteer", "volunteer")


@pytest.fixture
def curator(db) -> User:
    return make_user("curator", "curator", is_staff=True)


@pytest.fixture
def admin_user(db) -> User:
    return make_user("admin", None, is_staff=True, is_superuser=True)


@pytest.fixture
def fake_pipeline(monkeypatch) -> FakePipeline:
    """The fake pipeline (tests/fakes.py) in place of mlcore's for this test: nothing loads a real model.

    Change its attributes to change what it does (``objects``, ``fail_with``, ``embedder.version``).
    """
    from identification import pipeline_cache

    pipeline = FakePipeline()
    monkeypatch.setattr(pipeline_cache, "get_pipeline", fake_get_pipeline(pipeline))
    return pipeline


@pytest.fixture
def test_database_url(django_db_setup) -> str:
    """A libpq URL of this test's database, for a worker or server started as a child process."""
    from config.throwaway_db import database_url

    return database_url(connection.settings_dict["NAME"])


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium through Playwright (skipped without it, except in CI)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_browser("Playwright is not installed (requirements.txt)")
    executable = os.environ.get("OBVERSE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(executable, os.X_OK):
        missing_browser(f"no Chromium at {executable}")
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        # The sync API keeps an asyncio loop registered as running in this thread (it switches to it
        # with greenlets while a browser call waits), so Django's async-safety check would refuse the
        # test's queries, and the database flush after it, although none runs inside a coroutine.
        # Playwright's documentation for Django says to allow it; it lasts as long as the browser.
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        # Debian's Chromium; Playwright never downloads a browser of its own here.
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
