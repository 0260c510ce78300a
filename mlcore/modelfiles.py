"""The models folder and its manifest: where model files are, and whether each is the one expected.

Every part of mlcore that loads weights asks ``check_file`` for its file, which fails with a
``ModelFileError`` naming the command that fixes it (``SETUP_COMMAND``) when the file is missing or
its size or sha256 differs from ``manifest.json``. Preparing the folder is ``mlcore.setup_models``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "var" / "models"  # OBVERSE_VAR_DIR moves it
SETUP_COMMAND = "python -m mlcore.setup_models (or `make models`)"


class ModelFileError(RuntimeError):
    """A model file is missing or corrupt; the message names the command that fixes it."""


def models_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """``path``, else $OBVERSE_MODELS_DIR, else ``models`` in $OBVERSE_VAR_DIR (as the Django settings say)."""
    if path or os.environ.get("OBVERSE_MODELS_DIR"):
        return Path(path or os.environ["OBVERSE_MODELS_DIR"])
    var_dir = os.environ.get("OBVERSE_VAR_DIR")
    return Path(var_dir) / "models" if var_dir else DEFAULT_MODELS_DIR


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(directory: Path) -> dict[str, dict]:
    manifest = directory / "manifest.json"
    if not manifest.exists():
        return {}
    return {entry["name"]: entry for entry in json.loads(manifest.read_text())["models"]}


# (path, size, mtime) → sha256: a file is hashed once per process until it changes (/healthz asks often).
_checked: dict[tuple[str, int, int], str] = {}


def _problem(path: Path, entry: dict) -> str | None:
    """Why a prepared file is unusable ("missing", "corrupt (…)"), or None when it matches the manifest."""
    if not path.exists():
        return "missing"
    stat = path.stat()
    if stat.st_size != entry["size"]:
        return "corrupt (size differs from the manifest)"
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _checked:
        _checked[key] = sha256_of(path)
    if _checked[key] != entry["sha256"]:
        return "corrupt (checksum differs from the manifest)"
    return None


def check_file(directory: Path, name: str) -> Path:
    """Return the path of a prepared model file, or raise ModelFileError naming the fix."""
    entry = read_manifest(directory).get(name)
    if entry is None:
        raise ModelFileError(f"Model {name!r} is not prepared in {directory}; run {SETUP_COMMAND}.")
    path = directory / entry["filename"]
    problem = _problem(path, entry)
    if problem:
        raise ModelFileError(f"Model file {path} is {problem}; run {SETUP_COMMAND}.")
    return path


def verify_all(directory: Path) -> dict[str, str]:
    """Check every manifest entry by size and checksum; {name: 'ok' | reason}. Used by /healthz."""
    result: dict[str, str] = {}
    manifest = read_manifest(directory)
    if not manifest:
        return {"manifest": f"missing in {directory}; run {SETUP_COMMAND}"}
    for name, entry in manifest.items():
        problem = _problem(directory / entry["filename"], entry)
        result[name] = f"{problem}; run {SETUP_COMMAND}" if problem else "ok"
    return result


def link_pretrained(source: Path, target: Path) -> Path:
    """A private models folder ``target``: links to ``source``'s pretrained files, no trained versions.

    For benchmarks and tests that train into a throw-away folder without touching the installation's.
    Raises ModelFileError (naming the setup command) when ``source`` has not been prepared.
    """
    manifest = Path(source) / "manifest.json"
    if not manifest.exists():
        raise ModelFileError(f"No models in {source}; run {SETUP_COMMAND}.")
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    kept = []
    for entry in json.loads(manifest.read_text())["models"]:
        path = Path(source) / entry["filename"]
        if path.is_file() and "package" in entry:  # trained entries name no source package
            (target / entry["filename"]).symlink_to(path.resolve())
            kept.append(entry)
    (target / "manifest.json").write_text(json.dumps({"models": kept}, indent=2))
    return target
