"""Versioned folders of trained artifacts, with an ``active`` pointer that can be rolled back.

Layout under the models folder::

    trained/
      20261129T061500123Z-3fa2c91b/      one training run (UTC timestamp + short hash of its inputs)
        version.json                  parts (file, sha256, size), seed, record count, creation time
        metrics.json                  what the training measured on held-out data
        side.npz, metadata.json, …
      20261129T061500123Z-3fa2c91b.partial/   a run still writing (or one that crashed): never loaded
      active.json                     {"version": …, "previous": …, "activated_at": …}

A run writes into ``<version>.partial`` and is renamed into place only when complete, so a crash
never leaves a half-written version that could be activated. Activation rewrites ``active.json``
atomically and mirrors the active parts into ``manifest.json`` (entries named ``trained:<part>``),
so the health check sees them. The previous version is kept, so a bad training can be rolled back
with ``python -m mlcore.train --activate VERSION`` (or ``--rollback``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlcore.modelfiles import ModelFileError, sha256_of

TRAINED_DIR = "trained"
ACTIVE_FILE = "active.json"
PARTIAL_SUFFIX = ".partial"
TRAIN_COMMAND = "python -m mlcore.train --dataset DIR (or manage.py train_models)"
MANIFEST_PREFIX = "trained:"


@dataclass
class VersionInfo:
    """One complete trained version as listed by ``list_versions``."""

    version: str
    path: Path
    created: str
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    active: bool = False


def trained_root(models_dir: str | Path) -> Path:
    return Path(models_dir) / TRAINED_DIR


def _atomic_write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp", encoding="utf-8") as tmp:
        json.dump(data, tmp, indent=2, default=str)
    os.replace(tmp.name, path)


def version_name(*, fingerprint: str, now: datetime | None = None) -> str:
    """``YYYYMMDDTHHMMSSmmmZ-<8 hex>`` (UTC, milliseconds): sorts by time; the hash names the inputs."""
    now = now or datetime.now(UTC)
    digest = hashlib.sha256(f"{fingerprint}|{now.isoformat()}".encode()).hexdigest()[:8]
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{digest}"


def version_start(models_dir: str | Path, *, fingerprint: str) -> tuple[str, Path]:
    """Create an empty ``<version>.partial`` folder for a training run to write into."""
    root = trained_root(models_dir)
    root.mkdir(parents=True, exist_ok=True)
    while True:
        version = version_name(fingerprint=fingerprint)
        staging = root / (version + PARTIAL_SUFFIX)
        if not staging.exists() and not (root / version).exists():
            staging.mkdir()
            return version, staging
        fingerprint += "+"  # same second, same inputs: make the name unique


def version_commit(
    models_dir: str | Path,
    version: str,
    *,
    parts: dict[str, str],
    metrics: dict[str, Any],
    info: dict[str, Any] | None = None,
    activate: bool = True,
    keep: int = 5,
) -> VersionInfo:
    """Finish a run: record its parts ({part name: file name}) and metrics, move it into place, activate it.

    ``keep`` complete versions are kept besides the active and previous ones (older ones are pruned).
    """
    root = trained_root(models_dir)
    staging = root / (version + PARTIAL_SUFFIX)
    if not staging.is_dir():
        raise FileNotFoundError(f"No training run {version!r} in progress under {root}")
    described = {}
    for part, filename in parts.items():
        path = staging / filename
        if not path.is_file():
            raise FileNotFoundError(f"Part {part!r} of {version} has no file {filename}")
        described[part] = {"filename": filename, "sha256": sha256_of(path), "size": path.stat().st_size}
    created = datetime.now(UTC).isoformat(timespec="seconds")
    _atomic_write_json(staging / "metrics.json", metrics)
    _atomic_write_json(
        staging / "version.json", {"version": version, "created": created, "parts": described, **(info or {})}
    )
    os.replace(staging, root / version)
    if activate:
        version_activate(models_dir, version)
    versions_prune(models_dir, keep=keep)
    return version_info(models_dir, version)


def version_abort(models_dir: str | Path, version: str) -> None:
    """Remove the staging folder of a run that failed."""
    shutil.rmtree(trained_root(models_dir) / (version + PARTIAL_SUFFIX), ignore_errors=True)


def _read_active(models_dir: str | Path) -> dict[str, Any]:
    path = trained_root(models_dir) / ACTIVE_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def active_version(models_dir: str | Path) -> str | None:
    """The active version's name, or None when nothing has been trained (or activated) yet."""
    return _read_active(models_dir).get("version")


def previous_version(models_dir: str | Path) -> str | None:
    return _read_active(models_dir).get("previous")


def version_info(models_dir: str | Path, version: str) -> VersionInfo:
    path = trained_root(models_dir) / version
    meta_path = path / "version.json"
    if not meta_path.is_file():
        raise ModelFileError(f"Trained version {version!r} does not exist (or is incomplete) in {path.parent}")
    meta = json.loads(meta_path.read_text())
    metrics_path = path / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    return VersionInfo(
        version=version,
        path=path,
        created=meta.get("created", ""),
        parts=meta.get("parts", {}),
        metrics=metrics,
        active=active_version(models_dir) == version,
    )


def list_versions(models_dir: str | Path) -> list[VersionInfo]:
    """Complete versions, oldest first (names sort by time)."""
    root = trained_root(models_dir)
    if not root.is_dir():
        return []
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "version.json").is_file())
    return [version_info(models_dir, name) for name in names if not name.endswith(PARTIAL_SUFFIX)]


def version_activate(models_dir: str | Path, version: str) -> VersionInfo:
    """Point ``active.json`` at ``version`` (keeping the current one as ``previous``) and update the manifest."""
    info = version_info(models_dir, version)  # raises for unknown or incomplete versions
    for part, entry in info.parts.items():
        path = info.path / entry["filename"]
        if not path.is_file() or path.stat().st_size != entry["size"]:
            raise ModelFileError(f"Trained version {version}: part {part!r} is missing or corrupt; train again.")
    current = _read_active(models_dir)
    previous = current.get("version") if current.get("version") != version else current.get("previous")
    _atomic_write_json(
        trained_root(models_dir) / ACTIVE_FILE,
        {"version": version, "previous": previous, "activated_at": datetime.now(UTC).isoformat(timespec="seconds")},
    )
    _mirror_manifest(Path(models_dir), info)
    info.active = True
    return info


def version_rollback(models_dir: str | Path) -> VersionInfo:
    """Activate the version that was active before the current one."""
    previous = previous_version(models_dir)
    if not previous:
        raise ModelFileError(f"No previous trained version to roll back to in {trained_root(models_dir)}")
    return version_activate(models_dir, previous)


def versions_prune(models_dir: str | Path, *, keep: int = 5) -> list[str]:
    """Delete old complete versions and stale partial folders; never the active or previous one."""
    root = trained_root(models_dir)
    protected = {active_version(models_dir), previous_version(models_dir)}
    complete = [v.version for v in list_versions(models_dir)]
    removable = [v for v in complete if v not in protected]
    doomed = removable[: max(0, len(removable) - keep)]
    for version in doomed:
        shutil.rmtree(root / version, ignore_errors=True)
    return doomed


def resolve(
    models_dir: str | Path,
    filename: str,
    *,
    recipe: str | None = None,
    kind: str = "embedding",
    version: str | None = None,
) -> tuple[Path, str]:
    """(path of ``filename`` in the active version, version name); ModelFileError naming the fix otherwise.

    ``version``: that trained version instead of the active one (a new version is re-indexed
    before it is activated, so search keeps the old one meanwhile).

    ``recipe``: the recipe (of ``kind``: the embedding's, or a part's own, e.g. ``orientation``) the
    caller computes features with. A part learned on other features (the code changed since the
    training) would silently give wrong answers, so it is refused, as if nothing were trained,
    until the catalogue is trained again.
    """
    version = version or active_version(models_dir)
    if not version:
        raise ModelFileError(f"No trained models are active in {trained_root(models_dir)}; run {TRAIN_COMMAND}.")
    path = trained_root(models_dir) / version / filename
    if not path.is_file():
        raise ModelFileError(f"Trained version {version} has no {filename}; run {TRAIN_COMMAND}.")
    if recipe is not None and trained_recipe(models_dir, version, kind) != recipe:
        raise ModelFileError(
            f"Trained version {version} was trained for {kind} recipe "
            f"{trained_recipe(models_dir, version, kind) or '(unrecorded)'}, not {recipe}; run {TRAIN_COMMAND}."
        )
    return path, version


def trained_recipe(models_dir: str | Path, version: str, kind: str = "embedding") -> str | None:
    """The ``kind`` recipe a version's parts were trained on (``version.json``: ``<kind>_recipe``), or None."""
    meta_path = trained_root(models_dir) / version / "version.json"
    try:
        return json.loads(meta_path.read_text()).get(f"{kind}_recipe")
    except (OSError, ValueError):
        return None


def stale_kind(models_dir: str | Path, version: str, recipes: dict[str, str]) -> str | None:
    """The first kind whose recipe ``version`` was not trained for (it cannot serve the code), or None.

    ``recipes``: {kind: the recipe the code computes now}, e.g. the embedding's and the orientation's.
    """
    for kind, recipe in recipes.items():
        if trained_recipe(models_dir, version, kind) != recipe:
            return kind
    return None


def _mirror_manifest(models_dir: Path, info: VersionInfo) -> None:
    """Replace the manifest's ``trained:*`` entries by the active version's parts (pretrained entries kept).

    Entries carry no ``package`` key: they are produced here, not extracted from a wheel.
    """
    manifest_path = models_dir / "manifest.json"
    data = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"models": []}
    entries = [e for e in data.get("models", []) if not str(e.get("name", "")).startswith(MANIFEST_PREFIX)]
    for part, entry in sorted(info.parts.items()):
        entries.append(
            {
                "name": MANIFEST_PREFIX + part,
                "filename": f"{TRAINED_DIR}/{info.version}/{entry['filename']}",
                "version": info.version,
                "sha256": entry["sha256"],
                "size": entry["size"],
                "licence": "trained from the museum's own catalogue",
            }
        )
    _atomic_write_json(manifest_path, {**data, "models": entries})
