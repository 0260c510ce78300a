"""Template helpers of the identification pages."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def turn_words(angle) -> str:
    """An upright turn in words: 190 (degrees counter-clockwise) → '170° clockwise'; '' for no turn."""
    if angle is None:
        return ""
    degrees = float(angle) % 360
    if degrees > 180:
        degrees -= 360
    if abs(degrees) < 0.5:
        return ""
    return f"{abs(degrees):.0f}° {'anticlockwise' if degrees > 0 else 'clockwise'}"
