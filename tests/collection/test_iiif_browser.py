"""Mirador, from our static files, opens a real specimen's manifest in Debian's headless Chromium.

The ANS coin is imported with its two photos (tiles are cut at import); the viewer page loads
Mirador (installed from npm by `make mirador`, never from a CDN) under the page's CSP, fetches the
manifest, shows both canvases in its thumbnail strip and zooms the first through the level 0
image service. Screenshots go to var/screenshots/. Like tests/identification/test_browser.py, a
missing Chromium or Mirador skips the test on a developer's machine and fails it in CI.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from django.conf import settings

from collection.importers.nuds import import_nuds_paths
from collection.models import Specimen
from tests.samples import copy_records

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "screenshots"
MIRADOR = ROOT / "static" / "vendor" / "mirador" / "mirador.min.js"
REACT_REF_NOTICE = "Accessing element.ref was removed in React 19"
RECORD = "1944.100.53312"  # Severus Alexander, RIC IV 648b, obverse and reverse photos
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


def _missing(reason: str, fix: str):
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI=true but {reason}; {fix}")
    pytest.skip(f"{reason}: {fix}")


@pytest.fixture(scope="module")
def chromium():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed", "pip install -r requirements.txt")
    executable = os.environ.get("OBVERSE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(executable, os.X_OK):
        _missing(f"no Chromium at {executable}", "`make browser` (as root) installs Debian's chromium")
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # see tests/identification/test_browser.py
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_mirador_opens_the_manifest_and_shows_both_sides(chromium, live_server, ans_dir, tmp_path):
    if not MIRADOR.is_file():
        _missing(f"Mirador is not installed ({MIRADOR.relative_to(ROOT)})", "`make mirador` installs it from npm")
    folder = copy_records(ans_dir, tmp_path, [RECORD])
    assert not import_nuds_paths([folder / "nuds"]).failed
    specimen = Specimen.objects.get(record_id=RECORD)
    tile_urls = {f"/iiif/images/{image.pk}/" for image in specimen.images.all()}
    assert len(tile_urls) == 2

    context = chromium.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(20_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    # Console errors include the browser's CSP refusals ("Refused to apply inline style…"), so a policy
    # that blocks Mirador fails here. React 19's deprecation notice, printed as an error by the bundled
    # Mirador 4.0.0, is the one message let through.
    page.on(
        "console",
        lambda msg: msg.type == "error" and REACT_REF_NOTICE not in msg.text and errors.append(f"console: {msg.text}"),
    )
    failed: list[str] = []
    page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
    served: list[str] = []
    page.on("requestfinished", lambda r: served.append(r.url))

    page.goto(f"/specimens/{specimen.pk}/")
    page.locator(".linked-data").screenshot(path=str(_shot("specimen-open-data")))
    with page.expect_navigation():
        page.click("a.iiif-viewer-link")
    assert page.url.endswith(f"/specimens/{specimen.pk}/viewer/")
    # Mirador has read the manifest: its window title is the specimen's, and the strip shows both canvases.
    page.wait_for_selector(f"text={specimen.title}")
    page.wait_for_selector(".mirador-thumbnail-nav-canvas-1")
    canvases = page.locator("[class*='mirador-thumbnail-nav-canvas-']")
    assert canvases.count() == 2
    # OpenSeadragon draws the first canvas from the level 0 tiles.
    page.wait_for_function("() => document.querySelectorAll('.openseadragon-canvas canvas').length > 0")
    page.wait_for_timeout(1500)
    page.screenshot(path=str(_shot("mirador-obverse")))
    canvases.nth(1).click()  # the reverse
    page.wait_for_selector("text=2 of 2 • Reverse")
    page.wait_for_timeout(1000)
    page.screenshot(path=str(_shot("mirador-reverse")))

    iiif_files = [url for url in served if re.search(r"/iiif/images/\d+/.+/default\.jpg$", url)]
    for prefix in tile_urls:  # both sides' images came through the image service
        assert any(prefix in url for url in iiif_files), (prefix, iiif_files)
    assert any(f"/iiif/specimens/{specimen.pk}/manifest.json" in url for url in served)
    assert not [url for url in served if "unpkg" in url or "cdn" in url], "Mirador must come from our static files"
    assert not failed, failed
    assert not errors, errors


def _shot(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}.png"


def test_mirador_is_served_from_our_static_files():
    """The page loads Mirador by a path under STATIC_URL, never an outside address."""
    template = (ROOT / "templates" / "collection" / "iiif_viewer.html").read_text()
    scripts = re.findall(r"<script[^>]*src=\"([^\"]+)\"", template)
    assert scripts == ["{% static 'vendor/mirador/mirador.min.js' %}", "{% static 'js/iiif-viewer.js' %}"]
    assert "<script>" not in template and "style=" not in template
    assert settings.STATIC_URL.startswith("/")
