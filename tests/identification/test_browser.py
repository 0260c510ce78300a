"""The whole identification loop in a real browser: Debian's headless Chromium, driven by Playwright.

A visitor uploads a photo on /identify/, a real django-q2 worker (``manage.py qcluster`` in its own
process, on the test database) processes it, two volunteers log in and pick the same candidate on
the review page, a curator approves the proposal, the worker indexes the new catalogue images, and
the item's public page shows the new specimen. Screenshots of each page go to var/screenshots/.

The worker runs FakePipeline (tests/fakes.py) instead of the ML models: this test is
about the web pages, the queue and the review loop working together; the real pipeline has its own
end-to-end tests (test_end_to_end.py) and needs real data and prepared models, which this does not.

Chromium is Debian's (`make test` installs it when it runs as root). Without it the test is skipped
with the reason, except in CI (CI=true), where a missing browser is a failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.files.base import ContentFile
from PIL import Image, ImageDraw

from collection.models import ImageEmbedding, Side, Specimen, SpecimenImage
from identification import indexing
from identification.models import Submission, SubmissionStatus
from review.models import Proposal, ProposalStatus
from tests.browser import missing_browser
from tests.factories import make_item, make_specimen

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "screenshots"
TIMEOUT_MS = 15_000

# The worker: the project's settings on the test database, FakePipeline instead of the models, one
# worker process. django-q2 forks its workers, so the patches below reach them.
WORKER = """
import os
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings_test"
import django
django.setup()
from django.core.management import call_command
from django_q.conf import Conf
from tests.fakes import install_in_process
Conf.SYNC = False  # config.settings_test runs tasks inline; this process is the real queue
Conf.WORKERS = 1
install_in_process()
call_command("qcluster")
"""


@pytest.fixture
def queued_tasks(monkeypatch):
    """Tasks go to the ORM queue that the worker reads, instead of running inline in the web request."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", False)


@pytest.fixture
def worker(transactional_db, queued_tasks, tmp_path, test_database_url):
    """A real `manage.py qcluster` in its own process group, on the test database and this test's media."""
    env = {
        **{key: value for key, value in os.environ.items() if key != "DJANGO_ALLOW_ASYNC_UNSAFE"},
        "DATABASE_URL": test_database_url,
        "OBVERSE_MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "OBVERSE_PRIVATE_UPLOADS": str(settings.OBVERSE_PRIVATE_UPLOADS),
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", WORKER],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group, so stopping it also stops the workers it forked
        )
    process.log_path = log_path
    yield process
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)  # qcluster stops its sentinel and workers on SIGTERM
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever of the group is left (nothing, after a clean stop)
    process.wait()


def _worker_log(worker) -> str:
    return worker.log_path.read_text(errors="replace")[-3000:]


def _wait_for(condition, *, worker, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert worker.poll() is None, f"the worker exited while waiting for {what}:\n{_worker_log(worker)}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}; worker log:\n{_worker_log(worker)}"
        time.sleep(0.2)


def _coin_png(seed: int, size: int = 240) -> bytes:
    """A bronze disc on white with a repeatable design per seed, so pages show something coin-like."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    margin = size // 12
    draw.ellipse([margin, margin, size - margin, size - margin], fill=(176, 135, 80), outline=(110, 80, 40), width=6)
    for _ in range(5):
        x, y = (int(v) for v in rng.integers(size // 4, size * 3 // 5, 2))
        w, h = (int(v) for v in rng.integers(12, size // 4, 2))
        shade = int(rng.integers(40, 120))
        draw.ellipse([x, y, x + w, y + h], fill=(shade, int(shade * 0.8), int(shade * 0.5)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _catalogue_coin(item, *, seed: int, pipeline) -> SpecimenImage:
    """A specimen of ``item`` with one obverse image, indexed for search (as an imported one would be)."""
    specimen = make_specimen(item)
    data = _coin_png(seed)
    image = SpecimenImage(specimen=specimen, side=Side.OBVERSE, sha256=hashlib.sha256(data).hexdigest())
    image.image.save(f"{specimen.record_id}.png", ContentFile(data), save=True)
    assert indexing.catalogue_image_index(image_id=image.pk, pipeline=pipeline)
    return image


def _user(username: str, group: str, **kwargs) -> User:
    user = User.objects.create_user(username=username, password="pw-" + username, **kwargs)
    user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


def _serve_media(route) -> None:
    """Answer /media/ requests from MEDIA_ROOT, as the production web server does (Django doesn't with DEBUG off)."""
    root = Path(settings.MEDIA_ROOT).resolve()
    path = (root / re.sub(r"^.*?/media/", "", route.request.url.split("?")[0])).resolve()
    if root in path.parents and path.is_file():
        route.fulfill(path=str(path))
    else:
        route.fulfill(status=404, body="not found")


def _new_page(browser, base_url: str):
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    context.route(re.compile(r"/media/"), _serve_media)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))  # a JavaScript error fails the test below
    page.js_errors = errors
    return page


def _login(page, username: str) -> None:
    page.goto("/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", "pw-" + username)
    with page.expect_navigation():
        page.click("form.stack-form button[type=submit]")
    assert "/accounts/login/" not in page.url, f"{username} could not log in"


def _shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _images_loaded(page) -> list[str]:
    """Sources of the page's images that did not load (broken media links show up here)."""
    return page.eval_on_selector_all(
        "img[src]", "imgs => imgs.filter(i => i.complete && i.naturalWidth === 0).map(i => i.src)"
    )


def _review_and_pick(page, *, submission: Submission, item, use_keyboard: bool, name: str) -> None:
    """A volunteer takes the oldest submission from the queue and picks the first candidate."""
    _login(page, name)
    page.goto("/review/")
    row = page.locator(".queue-row", has_text=str(submission.pk)[:8])
    assert row.count() == 1, "the processed submission is not in the volunteer's queue"
    _shot(page, f"03-queue-{name}")
    with page.expect_navigation():
        page.click("text=Start reviewing: take the oldest")
    assert f"/review/{submission.pk}/" in page.url
    page.wait_for_selector("#img-candidate[src]")
    assert not _images_loaded(page), f"broken images on the review page: {_images_loaded(page)}"
    assert page.inner_text("#cap-candidate").startswith("#1")
    _shot(page, f"04-review-{name}")
    if use_keyboard:
        page.locator("body").press("m")  # the "choose this candidate" shortcut
    else:
        page.click("button[data-act=choose]")
    assert page.locator("input[name=decision][value=match]").is_checked()
    assert page.input_value("#item-select") == str(item.pk), "the first candidate should be the photographed item"
    page.fill("textarea[name=comment]", f"Same type, checked by {name}.")
    page.locator("#decision").screenshot(path=str(SCREENSHOTS / f"04-review-{name}-decision.png"))
    with page.expect_navigation():
        page.click("#decision button.button-secondary")  # "Save"
    assert page.url.endswith("/review/")
    assert "your review is recorded" in page.inner_text("body")
    assert not page.js_errors, page.js_errors


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_photo_goes_from_upload_through_review_and_approval_to_the_public_item_page(
    browser, live_server, worker, fake_pipeline, tmp_path, mailoutbox
):
    # The catalogue: three published types, each with an indexed image, so the search has candidates.
    target = make_item(reference="RIC VII Trier 435", title="Constantine I, follis, Trier, SOLI INVICTO COMITI")
    others = [
        make_item(reference="RIC VII London 27", title="Constantine I, follis, London"),
        make_item(reference="RIC VIII Rome 367", title="Constantius II, centenionalis, Rome"),
    ]
    for seed, item in zip((11, 12, 13), (target, *others), strict=True):
        _catalogue_coin(item, seed=seed, pipeline=fake_pipeline)
    curator = _user("curator", "curator", is_staff=True)
    _user("ada_volunteer", "volunteer")
    _user("ben_volunteer", "volunteer")
    calls_before_upload = fake_pipeline.calls
    photo = tmp_path / "my-coin.png"
    photo.write_bytes(_coin_png(11))  # the same picture as the target's catalogue image

    # A visitor sends a photo through the form.
    visitor = _new_page(browser, live_server.url)
    visitor.goto("/identify/")
    visitor.set_input_files("input[name=photo_1]", str(photo))
    visitor.fill("input[name=requester_name]", "Grace Visitor")
    visitor.fill("input[name=requester_email]", "grace@example.org")
    visitor.fill("textarea[name=notes]", "Found in my grandfather's desk.")
    _shot(visitor, "01-identify-form")
    with visitor.expect_navigation():
        visitor.click("form.identify-form button[type=submit]")
    submission = Submission.objects.get()
    assert str(submission.pk) in visitor.url

    # The worker takes it from the queue; the page polls and reloads itself when it is done.
    _wait_for(
        lambda: Submission.objects.get(pk=submission.pk).status == SubmissionStatus.AWAITING_REVIEW,
        worker=worker,
        what="the worker to process the submission",
    )
    assert fake_pipeline.calls == calls_before_upload, "the worker must process the upload, not the web request"
    visitor.wait_for_selector(".candidate-grid .candidate")
    assert "Awaiting review" in visitor.inner_text(".status")
    assert visitor.locator(".candidate").first.inner_text().count(target.reference) == 1
    assert not _images_loaded(visitor), f"broken images: {_images_loaded(visitor)}"
    _shot(visitor, "02-identification-result")

    # Two volunteers agree on the same candidate: that makes a proposal for curators.
    for name, use_keyboard in (("ada_volunteer", True), ("ben_volunteer", False)):
        page = _new_page(browser, live_server.url)
        _review_and_pick(page, submission=submission, item=target, use_keyboard=use_keyboard, name=name)
    proposal = Proposal.objects.get(submission=submission)
    assert proposal.status == ProposalStatus.PENDING and proposal.item_id == target.pk

    # The curator reads the proposal and approves it.
    page = _new_page(browser, live_server.url)
    _login(page, curator.username)
    page.goto("/review/proposals/")
    _shot(page, "05-proposals")
    with page.expect_navigation():
        page.click(f"a[href='/review/proposals/{proposal.pk}/']")
    assert target.reference in page.inner_text(".change")
    assert page.locator("table.table tbody tr").count() == 2  # both reviews are shown
    assert not _images_loaded(page), f"broken images: {_images_loaded(page)}"
    _shot(page, "06-proposal-detail")
    with page.expect_navigation():
        page.click("text=Approve and publish the specimen")
    specimen = Specimen.objects.get(attributes__submission=str(submission.pk))
    assert f"specimen {specimen.record_id} is now in the catalogue" in page.inner_text("body")
    _shot(page, "07-approved")
    assert Submission.objects.get(pk=submission.pk).status == SubmissionStatus.RESOLVED
    assert [message.to for message in mailoutbox] == [["grace@example.org"]]

    # The worker indexes the new catalogue images, so the next visitor's search finds them.
    _wait_for(
        lambda: ImageEmbedding.objects.filter(image__specimen=specimen).exists(),
        worker=worker,
        what="the worker to index the approved specimen's images",
    )

    # The public (anonymous) item page lists the new specimen with its image.
    public = _new_page(browser, live_server.url)
    public.goto(target.get_absolute_url())
    specimens = public.locator(".specimen-row")
    assert specimens.count() == 2
    assert specimens.filter(has_text=specimen.record_id).count() == 1
    assert specimens.filter(has_text=specimen.record_id).locator("img").count() >= 1
    assert not _images_loaded(public), f"broken images: {_images_loaded(public)}"
    _shot(public, "08-item-page")
    assert not (visitor.js_errors or page.js_errors or public.js_errors)


def test_a_missing_browser_skips_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="install Debian's chromium"):
        missing_browser("no Chromium at /nowhere")


def test_a_missing_browser_fails_in_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true but no Chromium"):
        missing_browser("no Chromium at /nowhere")
