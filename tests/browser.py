"""Chromium for the browser tests: how it is started, what happens where it is missing, and page helpers.

The ``browser`` fixture (tests/conftest.py) launches Debian's Chromium through Playwright with these
arguments; Playwright never downloads a browser of its own here. The helpers below open pages,
serve media and take the screenshots that go to var/screenshots/.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

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


# --- Pages in the browser: shared by the browser tests ------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "var" / "screenshots"
TIMEOUT_MS = 15_000


def serve_media(route) -> None:
    """Answer /media/ requests from MEDIA_ROOT, as the production web server does (Django doesn't with DEBUG off)."""
    from django.conf import settings

    root = Path(settings.MEDIA_ROOT).resolve()
    path = (root / re.sub(r"^.*?/media/", "", route.request.url.split("?")[0])).resolve()
    if root in path.parents and path.is_file():
        route.fulfill(path=str(path))
    else:
        route.fulfill(status=404, body="not found")


def new_page(browser, base_url: str, *, width: int = 1280, height: int = 900):
    """A page in a fresh context; ``page.js_errors`` collects JavaScript errors for the test to check."""
    context = browser.new_context(base_url=base_url, viewport={"width": width, "height": height})
    context.set_default_timeout(TIMEOUT_MS)
    context.route(re.compile(r"/media/"), serve_media)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    return page


def shot(page, name: str) -> None:
    """A full-page screenshot in var/screenshots/, to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def broken_images(page) -> list[str]:
    """Sources of the page's images that did not load (broken media links show up here)."""
    return page.eval_on_selector_all(
        "img[src]", "imgs => imgs.filter(i => i.complete && i.naturalWidth === 0).map(i => i.src)"
    )


def sideways_overflow(page) -> int:
    """How many pixels the page scrolls sideways (0 when it fits the window's width)."""
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


def element_shot(locator, name: str) -> None:
    """A screenshot of one part of a page (a locator) in var/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    locator.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
