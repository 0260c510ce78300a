"""What training learns from the review workflow: curator-approved identifications as examples.

``identification.training`` asks its registered sources for examples; this app registers
``feedback_examples`` there (``review.apps``), so training learns from reviews without the lower
layer importing this one.
"""

from __future__ import annotations

from PIL import Image

from collection.models import Item
from identification.catalogue import item_type_id
from identification.models import SubmissionImage
from review.models import Proposal, ProposalStatus
from review.selectors import training_signal

REVIEW_NEGATIVE_SPECIMENS = 3  # catalogue specimens taken from each hard-negative item


def feedback_examples(records: list) -> list:
    """The review signal as mlcore FeedbackExamples, one per query photo of an approved identification.

    The query is the photo's upright cut-out as the pipeline stored it; positives are the training
    records of the accepted item, minus the specimen the approval made from this very submission
    (its image is that same photo); negatives are records of the hard-negative items. Photos
    without an upright file, or whose item has no other specimen with images, are left out.
    """
    from mlcore.train import FeedbackExample

    signal = training_signal()
    if not signal:
        return []
    by_type: dict[str, list] = {}
    for record in records:
        by_type.setdefault(record.type_id, []).append(record)
    item_ids = {p.positive_item_id for p in signal} | {i for p in signal for i in p.hard_negative_item_ids}
    type_of = {item.pk: item_type_id(item) for item in Item.objects.filter(pk__in=item_ids).only("pk", "uri")}
    photos = {
        image.pk: image for image in SubmissionImage.objects.filter(pk__in=[p.submission_image_id for p in signal])
    }
    own = {
        str(submission_id): record_id
        for submission_id, record_id in Proposal.objects.filter(
            submission_id__in={p.submission_id for p in signal}, status=ProposalStatus.APPROVED, specimen__isnull=False
        ).values_list("submission_id", "specimen__record_id")
    }
    examples = []
    for pair in signal:
        photo = photos.get(pair.submission_image_id)
        if photo is None or not photo.upright:
            continue
        made_here = own.get(str(pair.submission_id))
        positives = [r for r in by_type.get(type_of.get(pair.positive_item_id), []) if r.record_id != made_here]
        if not positives:
            continue
        negatives = [
            record
            for item_id in pair.hard_negative_item_ids
            for record in by_type.get(type_of.get(item_id), [])[:REVIEW_NEGATIVE_SPECIMENS]
        ]
        try:
            query = photo.upright.path
        except NotImplementedError:  # storage without local paths: read the file
            with photo.upright.open("rb") as fh:
                query = Image.open(fh)
                query.load()
        examples.append(
            FeedbackExample(
                query=query,
                side=pair.side,
                positives=positives,
                negatives=negatives,
                label=f"submission-image:{pair.submission_image_id}",
                own_record_id=made_here or "",
            )
        )
    return examples
