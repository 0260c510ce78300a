"""Shared fixtures: personas (anonymous, volunteer, curator, admin) and the real-data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User

# `make test` runs pytest-xdist workers. Each worker gets its share of the cores for torch and ONNX
# Runtime (and so do the subprocesses it starts): two workers each using every core oversubscribed
# this 2-core CPU (the suite took 8.1 min with `-n 2` and default threads, 6.3 min with one each).
if os.environ.get("PYTEST_XDIST_WORKER"):
    _threads = str(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
    os.environ.setdefault("OMP_NUM_THREADS", _threads)
    os.environ.setdefault("OBVERSE_ONNX_THREADS", _threads)
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

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
