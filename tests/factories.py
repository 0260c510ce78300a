"""Small factories for the rows and pictures tests share (plain functions, no extra dependency).

Catalogue rows (items, specimens, images), users of each role, submissions as the worker leaves
them, and distinct pictures to upload. Fixtures live in the conftest modules; canned hostile or
sample files in ``tests/samples.py``; the fake pipeline in ``tests/fakes.py``.
"""

from __future__ import annotations

import hashlib
import io
import itertools
from datetime import timedelta

import numpy as np
from django.contrib.auth.models import Group, User
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from PIL import Image, ImageDraw

from collection.models import Concept, Item, Side, Source, Specimen, SpecimenImage
from identification import indexing, services
from identification.models import Candidate, Submission, SubmissionImage, SubmissionStatus
from review import services as review_services
from review.models import Review

_counter = itertools.count(1)


def make_source(**kwargs) -> Source:
    defaults = {"name": f"Test source {next(_counter)}", "licence": "ODbL", "credit": "Test credit"}
    return Source.objects.create(**{**defaults, **kwargs})


def make_concept(kind: str = "authority", label: str | None = None, **kwargs) -> Concept:
    label = label or f"Concept {next(_counter)}"
    return Concept.objects.create(kind=kind, label=label, slug=Concept.make_slug(label), **kwargs)


def make_item(*, concepts: list[Concept] = (), **kwargs) -> Item:
    n = next(_counter)
    defaults = {"reference": f"RIC X {n}", "title": f"Test type {n}", "uri": f"http://example.org/type/{n}"}
    item = Item.objects.create(**{**defaults, **kwargs})
    if concepts:
        item.concepts.add(*concepts)
    return item


def make_specimen(item: Item | None = None, **kwargs) -> Specimen:
    defaults = {"record_id": f"TEST.{next(_counter)}", "item": item}
    return Specimen.objects.create(**{**defaults, **kwargs})


def png_bytes(size: tuple[int, int] = (64, 64), color: str = "#b08d57") -> bytes:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).ellipse([4, 4, size[0] - 4, size[1] - 4], fill=color)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_image(specimen: Specimen, side: str = Side.OBVERSE, **kwargs) -> SpecimenImage:
    data = png_bytes()
    image = SpecimenImage(specimen=specimen, side=side, sha256=hashlib.sha256(data).hexdigest(), **kwargs)
    image.image.save(f"{specimen.record_id}.{side}.png", ContentFile(data), save=False)
    image.width, image.height = 64, 64
    image.save()
    return image


def pattern_png(seed: int, size: int = 120) -> bytes:
    """A distinct, repeatable picture per seed (different shapes and positions)."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.integers(0, size - 30, 2)
        w, h = rng.integers(10, 40, 2)
        shade = int(rng.integers(0, 200))
        draw.rectangle([int(x), int(y), int(x + w), int(y + h)], fill=(shade, shade, shade))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def two_coins_png(left: int, right: int) -> bytes:
    """Two pictures side by side in one photo (the two-object fake finds each half)."""
    photo = Image.new("RGB", (240, 120))
    photo.paste(Image.open(io.BytesIO(pattern_png(left))), (0, 0))
    photo.paste(Image.open(io.BytesIO(pattern_png(right))), (120, 0))
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    return buffer.getvalue()


def photo_upload(data: bytes | None = None, name: str = "coin.png") -> SimpleUploadedFile:
    """An uploaded photo, as a form or the API receives it (``pattern_png(1)`` unless given)."""
    return SimpleUploadedFile(name, pattern_png(1) if data is None else data, content_type="image/png")


def submit(seed: int = 1, **kwargs) -> Submission:
    """A submission as a visitor sends it, through the service: received, its photo (``pattern_png(seed)``) stored."""
    defaults = {
        "files": [photo_upload(pattern_png(seed))],
        "requester_name": "Ada",
        "requester_email": "ada@example.org",
    }
    return services.submission_create(**{**defaults, **kwargs})


def catalogue_image(item: Item, seed: int, side: str = Side.OBVERSE, pipeline=None) -> SpecimenImage:
    """A catalogue image of a new specimen of ``item``, indexed for search (by ``pipeline``, else the fake one)."""
    specimen = make_specimen(item)
    data = pattern_png(seed)
    image = SpecimenImage(specimen=specimen, side=side, sha256=hashlib.sha256(data).hexdigest())
    image.image.save(f"{specimen.record_id}.png", ContentFile(data), save=True)
    assert indexing.catalogue_image_index(image_id=image.pk, pipeline=pipeline)
    return image


def unindexed_catalogue_images(count: int) -> list[int]:
    """Ids of ``count`` catalogue images of one new item (distinct pictures), stored but not indexed."""
    item = make_item()
    ids = []
    for seed in range(count):
        specimen = make_specimen(item)
        data = pattern_png(100 + seed)
        image = SpecimenImage(specimen=specimen, side=Side.OBVERSE, sha256=hashlib.sha256(data).hexdigest())
        image.image.save(f"{specimen.record_id}.png", ContentFile(data), save=True)
        ids.append(image.pk)
    return ids


def make_user(username: str, group: str | None = "volunteer", **kwargs) -> User:
    """A user in ``group`` (a volunteer unless told; None for no group)."""
    user = User.objects.create_user(username=username, password="pw-" + username, **kwargs)
    if group:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


def make_submission(
    items=(),
    *,
    status: str = SubmissionStatus.AWAITING_REVIEW,
    two_photos: bool = False,
    side: str = "obverse",
    material: str = "",
    email: str = "ada@example.org",
    age: timedelta | None = None,
) -> Submission:
    """A submission as the worker leaves it: photos with cut-outs and ``items`` as its ranked candidates."""
    submission = Submission.objects.create(status=status, requester_name="Ada", requester_email=email)
    if age is not None:
        Submission.objects.filter(pk=submission.pk).update(created_at=timezone.now() - age)
    first = None
    for position in range(2 if two_photos else 1):
        image = SubmissionImage(
            submission=submission,
            position=position,
            side=side if position == 0 else "reverse",
            side_confidence=0.9,
            angle=30.0,
            metadata={"material": {"value": material, "confidence": 0.8}} if material else {},
            model_versions={"embedding": "fake-pixels@1"},
        )
        image.original.save(f"{position}-original.jpg", ContentFile(pattern_png(position + 7)), save=False)
        image.cutout.save(f"{position}-cutout.png", ContentFile(pattern_png(position + 7)), save=False)
        image.save()
        first = first or image
    for rank, item in enumerate(items, start=1):
        Candidate.objects.create(
            submission=submission, item=item, rank=rank, score=1 - rank / 10, query_image=first, rotation=-30.0
        )
    return submission


def claim_and_review(submission: Submission, user: User, decision: str = "match", item=None, **kwargs) -> Review:
    """``user`` claims the submission and records a decision (a match of ``item`` unless told)."""
    review_services.submission_claim(submission_id=submission.pk, user=user)
    return review_services.review_submit(
        submission_id=submission.pk, user=user, decision=decision, item_id=item.pk if item else None, **kwargs
    )
