"""mlcore.setup_models: the private models folders that benchmarks and tests train into."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlcore.setup_models import ModelFileError, link_pretrained


def test_it_links_only_the_pretrained_models(tmp_path):
    source = tmp_path / "models"
    source.mkdir()
    (source / "u2netp.onnx").write_bytes(b"onnx")
    (source / "head.pt").write_bytes(b"trained")
    manifest = {"models": [{"filename": "u2netp.onnx", "package": "x==1"}, {"filename": "head.pt"}]}
    (source / "manifest.json").write_text(json.dumps(manifest))
    assert link_pretrained(source, tmp_path / "private") == tmp_path / "private"
    assert sorted(p.name for p in (tmp_path / "private").iterdir()) == ["manifest.json", "u2netp.onnx"]
    assert (tmp_path / "private" / "u2netp.onnx").read_bytes() == b"onnx"
    kept = json.loads((tmp_path / "private" / "manifest.json").read_text())["models"]
    assert [entry["filename"] for entry in kept] == ["u2netp.onnx"]


def test_it_refuses_without_a_models_folder(tmp_path):
    with pytest.raises(ModelFileError, match="make models"):
        link_pretrained(tmp_path / "missing", tmp_path / "private")


@pytest.mark.slow
def test_the_backbone_graph_is_exported_once_and_again_when_its_source_changes(tmp_path):
    from mlcore.setup_models import _prepare_backbone_graph, read_manifest

    repo_models = Path(__file__).resolve().parents[2] / "var" / "models"
    source = read_manifest(repo_models).get("mobilenetv2-imagenet")
    if source is None:
        pytest.skip(f"pretrained models not prepared in {repo_models} (run make models)")
    (tmp_path / source["filename"]).symlink_to((repo_models / source["filename"]).resolve())

    def prepare() -> tuple[dict, int]:
        entry = _prepare_backbone_graph(tmp_path, [source], verbose=False)
        (tmp_path / "manifest.json").write_text(json.dumps({"models": [source, entry]}))
        return entry, (tmp_path / entry["filename"]).stat().st_mtime_ns

    entry, exported = prepare()
    assert entry["source_sha256"] == source["sha256"] and entry["size"] > 1_000_000
    assert prepare()[1] == exported  # up to date: left alone
    stale = {**entry, "source_sha256": "another-weights-file"}
    (tmp_path / "manifest.json").write_text(json.dumps({"models": [source, stale]}))
    assert prepare()[1] != exported  # the weights changed: exported again
