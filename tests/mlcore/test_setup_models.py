"""mlcore.setup_models: the private models folders that benchmarks and tests train into."""

from __future__ import annotations

import json

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
