"""Tooling: benchmarks, the stress run, the scale benchmark and the synthetic demo collection.

Nothing of the product imports this package; it may import anything. Each tool is reached through
a thin management command (``bench/management/commands``), ``python -m bench.<tool>`` or ``make``
(``make bench``, ``make bench-scale``, ``make stress``; ``make run`` loads the demo collection).
"""
