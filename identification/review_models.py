"""Review, consensus and approval models (volunteers review submissions, curators approve proposals)."""

from __future__ import annotations

__all__: list[str] = []
