"""Obverse's machine-learning core: pure Python/ML, no Django (a test enforces it)."""
