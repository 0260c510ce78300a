"""mlcore must stay pure ML: no module in it may import Django."""

from __future__ import annotations

import ast
from pathlib import Path

MLCORE = Path(__file__).resolve().parents[2] / "mlcore"


def test_mlcore_imports_nothing_from_django():
    offenders = []
    for path in MLCORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.name}: {name}" for name in names if name.split(".")[0] in {"django", "rest_framework"}
            ]
    assert list(MLCORE.rglob("*.py")), "mlcore has no modules to check"
    assert offenders == []
