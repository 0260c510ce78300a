"""mlcore must stay pure ML, the bottom layer: no module in it imports Django or any first-party package."""

from __future__ import annotations

import ast
from pathlib import Path

MLCORE = Path(__file__).resolve().parents[2] / "mlcore"
# Django and DRF, and every package of this repository above mlcore (apps, settings, tooling, tests).
FORBIDDEN = {"django", "rest_framework", "collection", "identification", "review", "config", "bench", "tests"}


def test_mlcore_imports_nothing_from_django_or_the_apps():
    offenders = []
    for path in MLCORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            offenders += [f"{path.name}: {name}" for name in names if name.split(".")[0] in FORBIDDEN]
    assert list(MLCORE.rglob("*.py")), "mlcore has no modules to check"
    assert offenders == []
