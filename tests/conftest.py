"""Shared fixtures: personas (anonymous, volunteer, curator, admin) and the real-data folder."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from django.contrib.auth.models import Group, User

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


def _user(username: str, group: str | None = None, **kwargs) -> User:
    user = User.objects.create_user(username=username, password="pw-" + username, **kwargs)
    if group:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


@pytest.fixture
def volunteer(db) -> User:
    return _user("volunteer", "volunteer")


@pytest.fixture
def curator(db) -> User:
    return _user("curator", "curator", is_staff=True)


@pytest.fixture
def admin_user(db) -> User:
    return _user("admin", None, is_staff=True, is_superuser=True)
