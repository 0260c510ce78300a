"""Template helpers for catalogue pages: image sources and an item's cover images."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django import template
from django.utils import timezone
from django.utils.timesince import timesince

from collection.models import Item, Side, SpecimenImage

register = template.Library()


@register.filter
def image_src(image: SpecimenImage | None, variant: str = "thumb") -> str:
    """URL of a catalogue image: the thumbnail (falling back to the file) or the full file, else the source's URL."""
    if image is None:
        return ""
    if variant == "thumb" and image.thumbnail:
        return image.thumbnail.url
    if image.image:
        return image.image.url
    return image.remote_url


@register.simple_tag
def item_cover(item: Item) -> dict[str, SpecimenImage | None]:
    """Obverse and reverse of the first public specimen that has images (uses prefetched rows only)."""
    for specimen in getattr(item, "public_specimens", []):
        images = list(specimen.images.all())
        if images:
            by_side = {image.side: image for image in reversed(images)}
            return {
                "obverse": by_side.get(Side.OBVERSE) or images[0],
                "reverse": by_side.get(Side.REVERSE),
            }
    return {"obverse": None, "reverse": None}


@register.filter
def concepts_of_kind(item: Item, kind: str) -> list:
    """The item's concepts of one kind, from the prefetched set."""
    return [concept for concept in item.concepts.all() if concept.kind == kind]


@register.filter
def measure(value) -> str:
    """A measurement without trailing zeros: Decimal('1.590') → '1.59', Decimal('14.00') → '14'."""
    if value is None or value == "":
        return ""
    try:
        text = format(Decimal(str(value)).normalize(), "f")
    except (InvalidOperation, ValueError):
        return str(value)
    return text


@register.filter
def age(moment) -> str:
    """How long ago ``moment`` was, in words; "under a minute" instead of Django's "0 minutes"."""
    if not moment:
        return ""
    if (timezone.now() - moment).total_seconds() < 60:
        return "under a minute"
    return timesince(moment)
