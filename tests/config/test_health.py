"""/healthz: database, vector extension and models folder decide 200 or 503; the worker is only reported."""

from __future__ import annotations

import json
from hashlib import sha256
from pathlib import Path

import pytest
from django.db import OperationalError, connection
from django.urls import reverse

from config import health


def _models_folder(path: Path, *, corrupt: str = "") -> Path:
    """A models folder whose manifest matches its files; ``corrupt``: "size" or "bytes" spoils the backbone's."""
    path.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, filename, payload in (("u2netp", "u2netp.onnx", b"onnx" * 10), ("backbone", "b.pt", b"pt" * 7)):
        digest = sha256(payload).hexdigest()
        entries.append({"name": name, "filename": filename, "size": len(payload), "sha256": digest})
        if name == "backbone" and corrupt == "size":
            payload += b"!"
        if name == "backbone" and corrupt == "bytes":
            payload = b"tp" + payload[2:]  # same size, other bytes: only the checksum tells
        (path / filename).write_bytes(payload)
    (path / "manifest.json").write_text(json.dumps({"models": entries}))
    return path


@pytest.mark.django_db
class TestHealthz:
    url = reverse("healthz")

    def test_it_is_ok_when_database_vector_and_models_are_ready(self, client, settings, tmp_path):
        settings.OBVERSE_MODELS_DIR = _models_folder(tmp_path / "models")
        response = client.get(self.url)
        body = response.json()
        assert response.status_code == 200, body
        assert body["status"] == "ok"
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["vector_extension"].startswith("ok (0.")
        assert body["checks"]["models"] == {"u2netp": "ok", "backbone": "ok"}
        assert "worker" in body["checks"]  # reported, whatever its state
        assert body["checks"]["background_jobs"] == []

    def test_it_shows_the_bulk_work_running_without_failing(self, client, settings, tmp_path):
        from identification.models import BackgroundJob

        settings.OBVERSE_MODELS_DIR = _models_folder(tmp_path / "models")
        BackgroundJob.objects.create(kind="train", status="running", detail="fitting the side classifier")
        body = client.get(self.url).json()
        assert body["status"] == "ok"
        (job,) = body["checks"]["background_jobs"]
        assert (job["kind"], job["status"], job["detail"]) == ("train", "running", "fitting the side classifier")
        assert job["progress"] is None and job["seconds_left"] is None  # a training's size is not counted

    def test_it_fails_with_503_when_the_models_folder_is_not_prepared(self, client, settings, tmp_path):
        settings.OBVERSE_MODELS_DIR = tmp_path / "empty"
        response = client.get(self.url)
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "error"
        assert "setup_models" in body["checks"]["models"]["manifest"]
        assert body["checks"]["database"] == "ok"

    @pytest.mark.parametrize("corrupt", ["size", "bytes"])
    def test_it_fails_when_a_model_file_is_corrupt(self, client, settings, tmp_path, corrupt):
        settings.OBVERSE_MODELS_DIR = _models_folder(tmp_path / "models", corrupt=corrupt)
        response = client.get(self.url)
        assert response.status_code == 503
        reason = response.json()["checks"]["models"]["backbone"]
        assert reason.startswith("corrupt") and "setup_models" in reason
        assert response.json()["checks"]["models"]["u2netp"] == "ok"

    def test_it_fails_when_the_database_is_unreachable(self, client, settings, tmp_path, monkeypatch):
        settings.OBVERSE_MODELS_DIR = _models_folder(tmp_path / "models")

        def unreachable():
            raise OperationalError("connection refused")

        monkeypatch.setattr(health, "connection", type("Down", (), {"cursor": staticmethod(unreachable)})())
        response = client.get(self.url)
        assert response.status_code == 503
        assert response.json()["checks"]["database"] == "error: OperationalError"
        assert connection.cursor()  # the real connection is untouched

    def test_a_stopped_worker_does_not_fail_the_check(self, client, settings, tmp_path, monkeypatch):
        settings.OBVERSE_MODELS_DIR = _models_folder(tmp_path / "models")
        monkeypatch.setattr(health, "_worker", lambda: "not running")
        response = client.get(self.url)
        assert response.status_code == 200
        assert response.json()["checks"]["worker"] == "not running"

    def test_trained_parts_are_reported_with_a_stale_recipe_named_but_do_not_fail_the_check(
        self, client, settings, tmp_path
    ):
        from mlcore import versions
        from mlcore.train import current_recipes

        models_dir = settings.OBVERSE_MODELS_DIR = _models_folder(tmp_path / "models")

        def trained_after_committing(recipes: dict[str, str]) -> tuple[str, str]:
            version, staging = versions.version_start(models_dir, fingerprint=str(recipes))
            (staging / "side.npz").write_text("weights")
            info = {f"{kind}_recipe": recipe for kind, recipe in recipes.items()}
            versions.version_commit(models_dir, version, parts={"side": "side.npz"}, metrics={}, info=info)
            response = client.get(self.url)
            assert response.status_code == 200
            return version, response.json()["checks"]["trained_models"]

        assert client.get(self.url).json()["checks"]["trained_models"].startswith("none yet")
        recipes = current_recipes(models_dir)
        old, trained = trained_after_committing({**recipes, "embedding": "gem-0-an-older-recipe"})
        assert trained.startswith(f"stale: {old} was trained for another embedding recipe")
        old, trained = trained_after_committing({**recipes, "orientation": "rotbins-1:an-older-recipe"})
        assert trained.startswith(f"stale: {old} was trained for another orientation recipe")
        current, trained = trained_after_committing(recipes)
        assert trained == f"ok ({current})"

    def test_it_only_answers_get(self, client):
        response = client.post(self.url)
        assert response.status_code == 405 and response["Allow"] == "GET"
