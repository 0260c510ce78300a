"""Small factories for catalogue rows used across tests (plain functions, no extra dependency)."""

from __future__ import annotations

import io
import itertools

from django.core.files.base import ContentFile
from PIL import Image, ImageDraw

from collection.models import Concept, Item, Side, Source, Specimen, SpecimenImage

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
    import hashlib

    data = png_bytes()
    image = SpecimenImage(specimen=specimen, side=side, sha256=hashlib.sha256(data).hexdigest(), **kwargs)
    image.image.save(f"{specimen.record_id}.{side}.png", ContentFile(data), save=False)
    image.width, image.height = 64, 64
    image.save()
    return image
