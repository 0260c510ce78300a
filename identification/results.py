"""What the result page tells a visitor, and the rules behind it.

* One number ranks the candidates and is the one shown: ``Candidate.total`` (image similarity plus
  metadata agreement, the ranking of ``mlcore.retrieval.rank_items``); its parts are shown on demand.
* ``is_confident``: whether the first candidate stands out from the second enough to be called a
  likely match; below that the page says "no confident match". The gap is calibrated on the
  identification benchmark (docs/confidence.md).
* ``design_tie``: when the leading candidates show the same design on the photographed side (same
  ruler, legend and bust: ``mlcore.dataset.design_key``), no photo of that side can tell them apart;
  the page says so and asks for the other side.
* ``facts``: which metadata is shown as a fact: a model prediction only when its confidence is
  calibrated, high enough and not contradicted by the candidates; otherwise what most candidates agree on.
* ``status_text`` and ``queue_text``: the state in words, and the place in the queue with a wait estimate.

Reads rows already loaded (``selectors.submission_get``) and a few counts; never writes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from collection.models import KEY_KINDS, ConceptKind, Item, Side
from identification.catalogue import item_design, items_sharing_design
from identification.models import Candidate, ProcessingStep, Submission, SubmissionImage, SubmissionStatus

# The first candidate is called a likely match when its total beats the second's by at least this
# much (on the totals' own scale). Chosen on the identification benchmark's per-query candidates
# (docs/confidence.md: 60 queries, poor photos; 13 called, 8 of them right; 3 right among the 47
# below); to be checked again whenever the model is retrained (``python -m bench.confidence``).
CONFIDENT_GAP = 0.12

# A model prediction is shown as a fact only from this calibrated confidence up.
FACT_MIN_CONFIDENCE = 0.5
# ... and only when at least this share of the candidates that name the field agree with it.
FACT_MIN_CANDIDATE_SHARE = 0.5
# Without a prediction to show, a value most candidates share is shown as theirs (at least this share).
CANDIDATES_AGREE_SHARE = 0.75

OTHER_SIDE = {Side.OBVERSE: Side.REVERSE, Side.REVERSE: Side.OBVERSE}


def confidence_gap(totals: Sequence[float]) -> float | None:
    """How far the first candidate's total is ahead of the second's; None with fewer than two candidates."""
    if len(totals) < 2:
        return None
    first, second = sorted(totals, reverse=True)[:2]
    return first - second


def is_confident(totals: Sequence[float]) -> bool:
    """Whether the first candidate stands out enough to be called a likely match (``CONFIDENT_GAP``)."""
    gap = confidence_gap(totals)
    return gap is not None and gap >= CONFIDENT_GAP


@dataclass(frozen=True)
class Tie:
    """Types that look the same on the photographed side: a photo of ``other_side`` decides between them."""

    side: str
    items: list[Item]  # the catalogue's published types with that design (the first candidate's among them)
    ranks: list[int] = field(default_factory=list)  # the ranks of those among the candidates

    @property
    def other_side(self) -> str:
        return OTHER_SIDE[self.side]


def photographed_side(images: Sequence[SubmissionImage], first: Candidate | None) -> str:
    """The side a single photo shows: the pipeline's reading, else the side of the image it matched best."""
    if len(images) != 1:
        return ""
    if images[0].side in OTHER_SIDE:
        return images[0].side
    matched = first.matched_image if first is not None else None
    return matched.side if matched is not None and matched.side in OTHER_SIDE else ""


def design_tie(images: Sequence[SubmissionImage], candidates: Sequence[Candidate]) -> Tie | None:
    """The tie on the photographed side, when the first candidate shares its design with another candidate.

    Only for one photo: with both sides photographed, the second side already tells such types apart.
    """
    if not candidates:
        return None
    side = photographed_side(images, candidates[0])
    if not side:
        return None
    key = item_design(candidates[0].item, side)
    if not key:
        return None
    ranks = [c.rank for c in candidates if item_design(c.item, side) == key]
    if len(ranks) < 2:
        return None
    return Tie(side=side, items=items_sharing_design(candidates[0].item, side), ranks=ranks)


@dataclass(frozen=True)
class Fact:
    """A line of "what we can say": a field's value, from the model (with its confidence) or the candidates."""

    field: str
    label: str
    value: str
    confidence: float | None = None  # the model's calibrated confidence; None when the candidates say it
    agreeing: int = 0  # candidates that carry this value
    of: int = 0  # candidates that name this field


def _candidate_labels(candidates: Sequence[Candidate]) -> list[dict[str, str]]:
    labels = []
    for candidate in candidates:
        concepts = getattr(candidate.item, "key_concepts", None)
        if concepts is None:
            concepts = candidate.item.concepts.all()
        found: dict[str, str] = {}
        for concept in sorted(concepts, key=lambda c: c.label):
            found.setdefault(concept.kind, concept.label)
        labels.append(found)
    return labels


def facts(image: SubmissionImage, candidates: Sequence[Candidate]) -> tuple[list[Fact], list[str]]:
    """(what is shown as fact for a photo, the fields whose model prediction was withheld).

    A prediction is withheld when its confidence is not calibrated (no trained version yet: raw vote
    shares read like probabilities but are not), below ``FACT_MIN_CONFIDENCE``, or contradicted by the
    candidates (fewer than ``FACT_MIN_CANDIDATE_SHARE`` of those naming the field carry the value).
    """
    labels = _candidate_labels(candidates)
    shown, withheld = [], []
    for name in KEY_KINDS:
        values = Counter(found[name] for found in labels if found.get(name))
        named = sum(values.values())
        label = str(ConceptKind(name).label)
        prediction = (image.metadata or {}).get(name) or {}
        value = prediction.get("value")
        if value:
            confidence = float(prediction.get("confidence") or 0.0)
            agrees = not named or values[value] / named >= FACT_MIN_CANDIDATE_SHARE
            # Rows stored before "calibrated" was recorded count as uncalibrated.
            if prediction.get("calibrated") and confidence >= FACT_MIN_CONFIDENCE and agrees:
                shown.append(Fact(name, label, value, round(confidence, 2), values[value], named))
                continue
            withheld.append(label)
        if named >= 2:
            common, count = values.most_common(1)[0]
            if count / len(candidates) >= CANDIDATES_AGREE_SHARE:
                shown.append(Fact(name, label, common, None, count, len(candidates)))
    return shown, withheld


def status_text(submission: Submission) -> str:
    """The state in words: waiting, the step being done (never "Received" while a step runs), or the status."""
    if submission.status == SubmissionStatus.RECEIVED:
        return "Waiting in the queue"
    if submission.status == SubmissionStatus.PROCESSING:
        steps = [step for step in ProcessingStep if step not in (ProcessingStep.RECEIVED, ProcessingStep.READY)]
        if submission.step in steps:
            number = steps.index(submission.step) + 1
            return f"{ProcessingStep(submission.step).label} (step {number} of {len(steps)})"
        return "Processing"
    return str(submission.get_status_display())


def wait_words(seconds: float) -> str:
    """'under a minute', 'about 1 minute', 'about 4 minutes'."""
    if seconds < 60:
        return "under a minute"
    minutes = math.ceil(seconds / 60)
    return f"about {minutes} minute{'s' if minutes != 1 else ''}"


def queue_text(*, ahead: int, running: int, typical_s: float | None, workers: int, elapsed_s: float | None) -> str:
    """The place in the queue and the wait, in words, for a submission not yet finished.

    ``ahead``: visitors' submissions waiting before this one; ``running``: others being processed;
    ``typical_s``: the median processing time of recent submissions (None: no history yet);
    ``elapsed_s``: how long this one has been processed (None while it waits).
    """
    if elapsed_s is not None:  # being processed now
        if typical_s is None:
            return ""
        return f"Usually done in {wait_words(typical_s)}; {wait_words(max(0.0, typical_s - elapsed_s))} to go."
    before = ahead + running
    place = (
        "Yours is next in the queue."
        if before == 0
        else f"{before} submission{'s' if before != 1 else ''} ahead of yours in the queue."
    )
    if typical_s is None:
        return place
    # Each worker takes one submission at a time: ours starts after the ones ahead are shared out.
    rounds = math.ceil((before + 1) / max(1, workers))
    return f"{place} Estimated wait: {wait_words(rounds * typical_s)}."
