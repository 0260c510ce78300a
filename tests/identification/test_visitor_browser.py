"""What a visitor meets, in a real browser (Debian's headless Chromium through Playwright).

The identify form with both sides, an error and a resubmission that keeps the chosen photos; the
result page at a phone's width (390 px) and a desk's (1280 px) without sideways scrolling, with
click-to-compare; the legend hint and narrowing by a ruler that is not among the candidates.
Screenshots of each go to var/screenshots/ (visitor-*.png).

The photos are processed by FakePipeline (tests/fakes.py) in the test process: these tests are
about the pages; the real pipeline has its own end-to-end tests.
"""

from __future__ import annotations

import pytest

from identification import services
from identification.models import Submission
from tests.browser import broken_images, element_shot, new_page, shot, sideways_overflow
from tests.factories import catalogue_image, make_concept, make_item, pattern_png, photo_upload

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def catalogue(fake_pipeline):
    """Types with long references and legends (what overflows a narrow page), each with an indexed image."""
    probus = make_concept("authority", "Probus")
    pius = make_concept("authority", "Antoninus Pius")
    silver = make_concept("material", "Silver")
    make_item(concepts=[make_concept("authority", "Nero")], reference="RIC I² Nero 44")  # never a candidate
    items = {
        "pius": make_item(
            concepts=[pius, silver],
            reference="RIC III Antoninus Pius 61a",
            title="Denarius of Antoninus Pius, Rome, 140–143",
            date_from=140,
            date_to=143,
            obverse_legend="ANTONINVS AVG PIVS P P TR P COS III",
            obverse_description="Laureate head of Antoninus Pius, right",
            reverse_legend="AEQVITAS AVG",
            reverse_description="Aequitas standing left, holding scales and sceptre",
        ),
        "pius2": make_item(
            concepts=[pius, silver],
            reference="RIC III Antoninus Pius 62",
            title="Denarius of Antoninus Pius, Rome, 140–143",
            date_from=140,
            date_to=143,
            obverse_legend="ANTONINVS AVG PIVS P P TR P COS III",
            obverse_description="Laureate head of Antoninus Pius, right",
            reverse_legend="ANNONA AVG",
            reverse_description="Annona standing right",
        ),
        "probus": make_item(
            concepts=[probus],
            reference="RIC V Probus 884 (Siscia, officina mark XXIVVI)",
            title="Antoninianus of Probus, Siscia, 276–282",
            date_from=276,
            date_to=282,
            obverse_legend="IMP C M AVR PROBVS PF AVG",
            reverse_legend="VIRTVS EXERCITVSPERPETVIAVGVSTORVMNOSTRORVM",
            reverse_description="Emperor standing left, receiving a globe from Jupiter",
        ),
    }
    for seed, item in zip((31, 32, 33), items.values(), strict=True):
        catalogue_image(item, seed=seed, pipeline=fake_pipeline)
    return items


def _processed(seed: int, **kwargs) -> Submission:
    submission = services.submission_create(
        files=[photo_upload(pattern_png(seed))],
        requester_name="Ada",
        requester_email="ada@example.org",
        photo_licence="none",
        **kwargs,
    )
    services.submission_process(submission_id=submission.pk)
    return submission


def test_the_two_photo_form_shows_every_error_keeps_the_photos_and_sends_once(
    browser, live_server, fake_pipeline, tmp_path
):
    obverse, reverse = tmp_path / "obverse.png", tmp_path / "reverse.png"
    obverse.write_bytes(pattern_png(41))
    reverse.write_bytes(pattern_png(42))
    page = new_page(browser, live_server.url, width=390, height=844)
    page.goto("/identify/")
    assert page.locator(".photo-input").count() == 2 and page.locator(".tips").count() == 1
    page.set_input_files("input[name=photo_1]", str(obverse))
    page.set_input_files("input[name=photo_2]", str(reverse))
    page.fill("input[name=requester_name]", "Grace Visitor")
    page.fill("input[name=requester_email]", "grace@")  # not an address; and no publication choice
    # Record whether the button was disabled while the form was being sent.
    page.evaluate(
        """() => { const form = document.querySelector('[data-identify-form]');
        form.addEventListener('submit', () => setTimeout(() => {
          window.sentWhileDisabled = form.querySelector('button[type=submit]').disabled; }, 0)); }"""
    )
    page.click("form.identify-form button[type=submit]")
    page.wait_for_selector("#errors-photo_licence .field-error")
    assert page.url.endswith("/identify/")  # answered in place: no new page
    summary = page.inner_text("[data-error-summary]")
    assert "2 things need your attention" in summary
    assert "valid email address" in page.inner_text("#errors-requester_email")
    assert page.evaluate("window.sentWhileDisabled") is True
    assert not page.locator("form.identify-form button[type=submit]").is_disabled()
    # The chosen photos are still chosen: nothing to pick again.
    assert page.evaluate("document.querySelector('input[name=photo_1]').files.length") == 1
    assert page.evaluate("document.querySelector('input[name=photo_2]').files.length") == 1
    assert sideways_overflow(page) == 0
    shot(page, "visitor-01-form-errors-390")
    assert Submission.objects.count() == 0

    page.fill("input[name=requester_email]", "grace@example.org")
    page.check("input[name=photo_licence][value='cc-by-4.0']")
    with page.expect_navigation():
        page.click("form.identify-form button[type=submit]")
    submission = Submission.objects.get()
    assert str(submission.pk) in page.url
    assert [image.declared_side for image in submission.images.order_by("position")] == ["obverse", "reverse"]
    assert submission.photo_licence == "cc-by-4.0"
    shot(page, "visitor-02-sent-390")
    assert not page.js_errors, page.js_errors


@pytest.mark.parametrize("width", [390, 1280])
def test_the_result_page_fits_the_screen_and_compares_a_clicked_candidate(browser, live_server, catalogue, width):
    submission = _processed(31)
    page = new_page(browser, live_server.url, width=width, height=900)
    page.goto(submission.get_absolute_url())
    page.wait_for_selector(".candidate-grid .candidate")
    assert sideways_overflow(page) == 0, f"the page scrolls sideways by {sideways_overflow(page)} px at {width} px"
    assert not broken_images(page), broken_images(page)
    # The two Antoninus Pius types share their obverse: the page asks for the reverse.
    assert "share this obverse" in page.inner_text(".verdict")
    shot(page, f"visitor-03-result-{width}")
    page.click(".candidate:nth-child(2) [data-compare]")
    assert page.inner_text("#compare-candidate-caption").startswith("#2 ")
    assert page.is_visible("[data-compare-item='1']") and not page.is_visible("[data-compare-item='0']")
    assert "ANNONA AVG" in page.inner_text("#compare-detail") or "AEQVITAS AVG" in page.inner_text("#compare-detail")
    page.click("[data-act=upright]")
    assert page.get_attribute("[data-act=upright]", "aria-pressed") == "true"
    element_shot(page.locator("#compare"), f"visitor-04-compare-{width}")
    assert not page.js_errors, page.js_errors


def test_a_legend_hint_and_a_ruler_from_the_whole_vocabulary_narrow_the_candidates(browser, live_server, catalogue):
    submission = _processed(31)
    page = new_page(browser, live_server.url)
    page.goto(submission.get_absolute_url())
    assert page.locator(".candidate").count() == 3
    page.fill("input[name=legend]", "…virtus exerc…")
    with page.expect_navigation():
        page.click("#narrow button[type=submit]")
    cards = page.locator(".candidate")
    assert cards.count() == 1 and "Probus 884" in cards.first.inner_text()
    assert "One catalogue type fits what you said" in page.inner_text(".verdict")
    assert page.input_value("input[name=legend]") == "…virtus exerc…"  # the hint is kept, to change it
    shot(page, "visitor-05-legend-hint")

    page.fill("input[name=legend]", "")
    # Nero is in the catalogue but among none of the candidates: offered all the same.
    assert page.locator("select[name=authority] optgroup[label='Elsewhere in the catalogue'] option").count() >= 1
    page.select_option("select[name=authority]", label="Nero")
    with page.expect_navigation():
        page.click("#narrow button[type=submit]")
    assert page.locator(".candidate").count() == 0
    assert "No catalogue item matches these filters" in page.inner_text(".candidates")
    page.select_option("select[name=authority]", label="Antoninus Pius")
    with page.expect_navigation():
        page.click("#narrow button[type=submit]")
    assert page.locator(".candidate").count() == 2
    assert not page.js_errors, page.js_errors
