"""identification.results: the rules behind what the result page tells a visitor."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from identification import results, selectors
from identification.models import Candidate, Submission, SubmissionImage, SubmissionStatus
from identification.templatetags.identification_tags import turn_words
from tests.factories import make_concept, make_image, make_item, make_specimen, make_submission


class TestConfidentMatch:
    def test_a_first_candidate_well_ahead_of_the_second_is_a_likely_match(self):
        # A query of the benchmark whose first candidate was right (docs/confidence.md).
        assert results.is_confident([0.848, 0.54, 0.52, 0.5, 0.49, 0.47, 0.46, 0.45])

    def test_leaders_close_together_are_no_confident_match(self):
        # The page: #2 and #3 within a few hundredths of the first.
        assert not results.is_confident([0.512, 0.495, 0.49, 0.4])
        assert not results.is_confident([1.44, 1.40, 0.153])

    def test_the_rule_is_the_calibrated_gap_between_the_first_two_totals(self):
        assert results.confidence_gap([0.7, 0.9, 0.5]) == pytest.approx(0.2)  # in any order
        gap = results.CONFIDENT_GAP
        assert results.is_confident([1.0, 1.0 - gap - 0.001, 0.0])
        assert not results.is_confident([1.0, 1.0 - gap + 0.001, 0.0])

    def test_one_candidate_or_none_claims_nothing(self):
        assert results.confidence_gap([0.9]) is None and not results.is_confident([0.9])
        assert not results.is_confident([])


@pytest.mark.django_db
class TestFacts:
    def _candidates(self, values: list[str]) -> list[Candidate]:
        materials = {value: make_concept("material", value) for value in set(values)}
        submission = make_submission([make_item(concepts=[materials[value]]) for value in values])
        return list(submission.candidates.select_related("item").order_by("rank"))

    def _image(self, **prediction) -> SubmissionImage:
        return SubmissionImage(metadata={"material": prediction} if prediction else {})

    def test_an_uncalibrated_prediction_is_not_shown_as_a_fact(self):
        candidates = self._candidates(["Silver"] * 8)
        image = self._image(value="Bronze", confidence=0.8, calibrated=False)
        shown, withheld = results.facts(image, candidates)
        assert withheld == ["Material"]
        # What all eight candidates agree on is shown instead, as theirs.
        assert [(f.value, f.confidence, f.agreeing, f.of) for f in shown] == [("Silver", None, 8, 8)]

    def test_a_calibrated_prediction_the_candidates_contradict_is_withheld(self):
        candidates = self._candidates(["Silver"] * 6 + ["Bronze"] * 2)
        shown, withheld = results.facts(self._image(value="Bronze", confidence=0.9, calibrated=True), candidates)
        assert withheld == ["Material"] and [f.value for f in shown] == ["Silver"]

    def test_a_calibrated_confident_prediction_the_candidates_support_is_shown(self):
        candidates = self._candidates(["Silver"] * 5 + ["Bronze"] * 3)
        shown, withheld = results.facts(self._image(value="Silver", confidence=0.92, calibrated=True), candidates)
        assert withheld == [] and [(f.value, f.confidence) for f in shown] == [("Silver", 0.92)]

    def test_a_timid_prediction_and_divided_candidates_show_nothing(self):
        candidates = self._candidates(["Silver", "Bronze", "Gold", "Silver"])
        shown, withheld = results.facts(self._image(value="Silver", confidence=0.3, calibrated=True), candidates)
        assert shown == [] and withheld == ["Material"]


@pytest.mark.django_db
class TestDesignTie:
    def _item(self, ruler, legend, reverse):
        return make_item(
            concepts=[ruler],
            obverse_legend=legend,
            obverse_description="Laureate head right",
            reverse_legend=reverse,
            reverse_description="Roma seated",
        )

    def test_types_sharing_the_photographed_obverse_are_named_and_the_reverse_asked_for(self):
        pius = make_concept("authority", "Antoninus Pius")
        same = [
            self._item(pius, "ANTONINVS AVG PIVS P P", f"COS IIII {word}")
            for word in ("PAX", "FIDES", "SALVS", "SPES", "VOTA")
        ]
        other = self._item(pius, "IMP T AEL CAES HADRI ANTONINVS", "TR POT")
        make_item(concepts=[pius], obverse_legend="ANTONINVS AVG PIVS P P", obverse_description="Bare head")
        submission = make_submission([same[0], same[1], other, same[2]], side="obverse")
        images = list(submission.images.all())
        candidates = list(submission.candidates.select_related("item").order_by("rank"))
        tie = results.design_tie(images, candidates)
        assert tie is not None and tie.side == "obverse" and tie.other_side == "reverse"
        assert tie.ranks == [1, 2, 4]
        assert {item.pk for item in tie.items} == {item.pk for item in same}  # the catalogue's 5, not only candidates

    def test_an_unknown_side_is_the_side_of_the_best_match(self):
        ruler = make_concept("authority", "Hadrian")
        items = [self._item(ruler, "HADRIANVS AVGVSTVS", reverse) for reverse in ("COS III PAX", "COS III FIDES")]
        submission = make_submission(items, side="unknown")
        reverse = make_image(make_specimen(items[0]), side="reverse")
        Candidate.objects.filter(submission=submission, rank=1).update(matched_image=reverse)
        images = list(submission.images.all())
        candidates = list(submission.candidates.select_related("item", "matched_image").order_by("rank"))
        assert results.photographed_side(images, candidates[0]) == "reverse"
        assert results.design_tie(images, candidates) is None  # their reverses differ

    def test_no_tie_with_both_sides_photographed_or_a_lone_design(self):
        ruler = make_concept("authority", "Trajan")
        twins = [self._item(ruler, "IMP TRAIANO AVG", reverse) for reverse in ("SPQR OPTIMO", "SPQR DACIA")]
        both = make_submission(twins, two_photos=True)
        assert results.design_tie(list(both.images.all()), list(both.candidates.all())) is None
        lone = make_submission([twins[0], self._item(ruler, "DIVO TRAIANO", "X")])
        assert results.design_tie(list(lone.images.all()), list(lone.candidates.all())) is None


@pytest.mark.django_db
class TestQueue:
    def test_the_place_counts_visitors_waiting_before_and_the_wait_the_recent_median(self):
        now = timezone.now()
        for minutes in (1, 2, 4):  # three processed recently, 60 s, 120 s and 240 s
            done = Submission.objects.create(status=SubmissionStatus.AWAITING_REVIEW)
            Submission.objects.filter(pk=done.pk).update(
                processing_started_at=now - timedelta(minutes=10), processed_at=now - timedelta(minutes=10 - minutes)
            )
        earlier = [Submission.objects.create() for _ in range(2)]
        Submission.objects.create(status=SubmissionStatus.PROCESSING)
        mine = Submission.objects.create()
        Submission.objects.create()  # after mine: not ahead
        place = selectors.queue_place(mine)
        assert (place["ahead"], place["running"], place["typical_s"], place["elapsed_s"]) == (2, 1, 120.0, None)
        assert len(earlier) == 2
        text = results.queue_text(**place, workers=2)
        # Three ahead (two waiting, one running) on two workers: ours starts in the second round.
        assert text == "3 submissions ahead of yours in the queue. Estimated wait: about 4 minutes."

    def test_without_history_only_the_place_is_said(self):
        assert results.queue_text(ahead=0, running=0, typical_s=None, workers=2, elapsed_s=None) == (
            "Yours is next in the queue."
        )

    def test_a_running_submission_says_how_long_is_left(self):
        text = results.queue_text(ahead=5, running=1, typical_s=90.0, workers=2, elapsed_s=60.0)
        assert text == "Usually done in about 2 minutes; under a minute to go."


class TestStatusText:
    def test_a_running_step_is_named_never_received(self):
        running = Submission(status=SubmissionStatus.PROCESSING, step="removing_background")
        assert results.status_text(running) == "Removing background (step 2 of 7)"
        assert results.status_text(Submission(status=SubmissionStatus.RECEIVED)) == "Waiting in the queue"
        assert results.status_text(Submission(status=SubmissionStatus.AWAITING_REVIEW)) == "Awaiting review"


class TestTurnWords:
    @pytest.mark.parametrize(
        ("angle", "words"),
        [(190, "170° clockwise"), (30, "30° anticlockwise"), (-45, "45° clockwise"), (360, ""), (0.2, ""), (None, "")],
    )
    def test_a_turn_is_said_the_short_way_round(self, angle, words):
        assert turn_words(angle) == words
