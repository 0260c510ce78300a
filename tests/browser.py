"""Chromium for the browser tests: how it is started, and what happens where it is missing.

The ``browser`` fixture (tests/conftest.py) launches Debian's Chromium through Playwright with these
arguments; Playwright never downloads a browser of its own here.
"""

from __future__ import annotations

import os

import pytest

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    # No network but loopback here: without these Chromium keeps trying to reach its own services.
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


def missing_browser(reason: str):
    """Skip with the reason on a developer's machine; fail in CI, where `make test` installs Chromium."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI=true but {reason}; `make test` installs Debian's chromium when run as root.")
    pytest.skip(f"{reason}: install Debian's chromium (`make browser` as root) to run the browser test")
