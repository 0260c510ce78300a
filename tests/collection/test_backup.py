"""Backups: a round trip (back up, wipe, restore, compare counts and checksums), refusals and the tool lookup.

The database tests commit (``transaction=True``): pg_dump reads from its own connection, so rows
inside an open test transaction would be invisible to it.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import psycopg
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django_q.models import Schedule

from collection import backup
from collection.models import ImageEmbedding, Item, Side, SpecimenImage
from identification.models import Submission, SubmissionImage
from tests.factories import make_image, make_item, make_specimen

COMMITTED = pytest.mark.django_db(transaction=True)


def _populate() -> None:
    """A small installation: catalogue rows with images and an embedding, a submission with its raw upload."""
    item = make_item()
    specimen = make_specimen(item)
    image = make_image(specimen)
    make_image(specimen, side=Side.REVERSE)
    vector = np.linspace(-1, 1, 1280, dtype=np.float32)
    ImageEmbedding.objects.create(
        image=image, item=item, side=Side.OBVERSE, model_name="m", model_version="1", vector=vector
    )
    submission = Submission.objects.create(requester_name="Ada", requester_email="ada@example.org")
    upload = Path(settings.OBVERSE_PRIVATE_UPLOADS) / str(submission.pk) / "0.upload"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"raw upload bytes")
    SubmissionImage.objects.create(submission=submission, position=0, upload_path=f"{submission.pk}/0.upload")


def _state() -> tuple[dict[str, int], dict[str, dict[str, str]]]:
    """Row counts of every table, and {folder: {file: sha256}} of media and private uploads."""
    files = {
        archive: {name: backup.file_sha256(path) for name, path in backup._files(Path(getattr(settings, setting)))}
        for archive, setting in backup.FOLDERS.items()
    }
    return backup._table_counts(), files


def _wipe() -> None:
    call_command("flush", "--noinput")
    for setting in backup.FOLDERS.values():
        shutil.rmtree(getattr(settings, setting), ignore_errors=True)


@COMMITTED
class TestRoundTrip:
    def test_it_restores_every_row_and_file_after_a_wipe(self, tmp_path):
        _populate()
        before = _state()
        call_command("backup", str(tmp_path / "b"))
        _wipe()
        assert Item.objects.count() == 0
        call_command("restore", str(tmp_path / "b"))
        assert _state() == before
        assert before[0]["collection_item"] == 1
        assert len(before[1]["media"]) == 2
        assert len(before[1]["uploads"]) == 1
        # Vectors come back intact, and the ORM reads them through a fresh connection.
        restored = ImageEmbedding.objects.get()
        values = restored.vector.to_list() if hasattr(restored.vector, "to_list") else restored.vector
        assert np.allclose(np.asarray(values, dtype=np.float32), np.linspace(-1, 1, 1280), atol=1e-2)

    @pytest.mark.data
    def test_it_round_trips_an_ans_subset(self, ans_dir, tmp_path):
        from collection.importers.tabular import import_csv_file

        subset = tmp_path / "labels.csv"
        with (ans_dir / "labels.csv").open(encoding="utf-8", newline="") as source:
            rows = list(csv.reader(source))[:4]  # the header and three coins
        with subset.open("w", encoding="utf-8", newline="") as out:
            csv.writer(out).writerows(rows)
        result = import_csv_file(subset, images_dir=ans_dir)
        assert not result.failed
        before = _state()
        assert before[0]["collection_specimen"] == 3
        assert before[0]["collection_specimenimage"] == 6
        assert len(before[1]["media"]) >= 6  # the photos and what the import derives from them
        call_command("backup", str(tmp_path / "b"))
        _wipe()
        call_command("restore", str(tmp_path / "b"))
        assert _state() == before

    def test_the_manifest_counts_rows_and_checksums_every_file(self, tmp_path):
        _populate()
        counts, files = _state()
        manifest = backup.backup_create(path=tmp_path / "b")
        assert manifest["database"]["tables"] == counts
        assert {name: part["files"] for name, part in manifest["folders"].items()} == files
        assert manifest["missing_files"] == []
        on_disk = json.loads((tmp_path / "b" / "manifest.json").read_text())
        assert on_disk["database"]["sha256"] == backup.file_sha256(tmp_path / "b" / "database.dump")


@COMMITTED
class TestBackup:
    def test_it_refuses_a_folder_that_is_not_empty(self, tmp_path):
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "precious.txt").write_text("keep me")
        with pytest.raises(CommandError, match="not an empty folder"):
            call_command("backup", str(tmp_path / "b"))
        assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["precious.txt"]

    def test_it_leaves_no_half_written_backup_when_a_step_fails(self, tmp_path, monkeypatch):
        _populate()

        def disk_full(root, target):
            target.write_bytes(b"partial")
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(backup, "_archive", disk_full)
        with pytest.raises(OSError):
            backup.backup_create(path=tmp_path / "b")
        assert not (tmp_path / "b").exists()

    def test_it_lists_files_the_database_names_but_the_disk_lacks(self, tmp_path):
        _populate()
        gone = SpecimenImage.objects.order_by("pk").first().image
        Path(gone.path).unlink()
        manifest = backup.backup_create(path=tmp_path / "b")
        assert manifest["missing_files"] == [gone.name]


@COMMITTED
class TestRestore:
    def test_it_refuses_a_database_that_is_not_empty_without_yes(self, tmp_path):
        _populate()
        call_command("backup", str(tmp_path / "b"))
        make_item(title="Added after the backup")
        with pytest.raises(CommandError, match="--yes"):
            call_command("restore", str(tmp_path / "b"))
        assert Item.objects.filter(title="Added after the backup").exists()

    def test_it_changes_nothing_when_the_operator_does_not_confirm(self, tmp_path, monkeypatch):
        from collection.management.commands import restore

        _populate()
        call_command("backup", str(tmp_path / "b"))
        make_item(title="Added after the backup")
        monkeypatch.setattr(restore.sys.stdin, "isatty", lambda: True)
        monkeypatch.setattr("builtins.input", lambda prompt: "no")
        with pytest.raises(CommandError, match="cancelled"):
            call_command("restore", str(tmp_path / "b"))
        assert Item.objects.filter(title="Added after the backup").exists()

    def test_with_yes_it_replaces_rows_and_files_added_since(self, tmp_path):
        _populate()
        before = _state()
        call_command("backup", str(tmp_path / "b"))
        make_image(make_specimen(make_item(title="Added after the backup")))
        changed = Path(settings.OBVERSE_PRIVATE_UPLOADS) / next(iter(before[1]["uploads"]))
        changed.write_bytes(b"overwritten")
        call_command("restore", str(tmp_path / "b"), "--yes")
        assert _state() == before
        assert not Item.objects.filter(title="Added after the backup").exists()

    def test_it_changes_nothing_when_an_archive_is_damaged(self, tmp_path):
        _populate()
        call_command("backup", str(tmp_path / "b"))
        archive = tmp_path / "b" / "media.tar"
        data = bytearray(archive.read_bytes())
        data[700] ^= 0xFF  # inside the first file's contents
        archive.write_bytes(bytes(data))
        _wipe()
        with pytest.raises(CommandError, match="checksum"):
            call_command("restore", str(tmp_path / "b"))
        assert Item.objects.count() == 0
        assert not Path(settings.MEDIA_ROOT).exists()

    def test_it_refuses_a_folder_without_a_manifest(self, tmp_path):
        (tmp_path / "b").mkdir()
        with pytest.raises(CommandError, match="manifest"):
            call_command("restore", str(tmp_path / "b"))


@COMMITTED
class TestRestoreOnALiveInstall:
    def test_it_refuses_while_another_session_uses_the_database_and_names_it(self, tmp_path, test_database_url):
        _populate()
        before = _state()
        call_command("backup", str(tmp_path / "b"))
        make_item(title="Added after the backup")
        refused = pytest.raises(CommandError, match=r"1 other session\(s\).*obverse qcluster.*Stop the web server")
        with psycopg.connect(test_database_url, application_name="obverse qcluster"), refused:  # the worker, say
            call_command("restore", str(tmp_path / "b"), "--yes")
        assert Item.objects.filter(title="Added after the backup").exists()  # nothing was changed
        call_command("restore", str(tmp_path / "b"), "--yes")  # once it is stopped
        assert _state() == before

    def test_it_refuses_while_a_worker_runs_even_without_a_database_session(self, tmp_path, monkeypatch):
        from django_q.status import Stat

        _populate()
        call_command("backup", str(tmp_path / "b"))
        make_item(title="Added after the backup")
        heartbeat = Stat.__new__(Stat)  # as a running cluster's sentinel writes it every second
        heartbeat.cluster_id, heartbeat.host, heartbeat.sentinel, heartbeat.status = "c0ffee", "worker-1", 4242, "Idle"
        monkeypatch.setattr(Stat, "get_all", staticmethod(lambda broker=None: [heartbeat]))
        with pytest.raises(CommandError, match="django-q2 cluster c0ffee on worker-1"):
            call_command("restore", str(tmp_path / "b"), "--yes")
        assert Item.objects.filter(title="Added after the backup").exists()

    def test_it_refuses_a_backup_of_a_newer_schema(self, tmp_path):
        _populate()
        call_command("backup", str(tmp_path / "b"))
        manifest_path = tmp_path / "b" / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["database"]["migrations"]["identification"].append("9999_from_the_future")
        manifest_path.write_text(json.dumps(manifest))
        make_item(title="Added after the backup")
        with pytest.raises(CommandError, match="newer version of Obverse"):
            call_command("restore", str(tmp_path / "b"), "--yes")
        assert Item.objects.filter(title="Added after the backup").exists()


OLD_SCHEMA = ("identification", "0008_background_jobs")  # before submissions had decided_at


@COMMITTED
def test_a_backup_of_an_older_schema_is_restored_and_migrated(tmp_path, capsys):
    """Back up a database at an older migration, move the code's database on, restore: it is migrated."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    try:
        call_command("migrate", *OLD_SCHEMA, verbosity=0)
        old_apps = MigrationExecutor(connection).loader.project_state(OLD_SCHEMA).apps
        OldSubmission = old_apps.get_model("identification", "Submission")
        decided = OldSubmission.objects.create(status="resolved", requester_email="ada@example.org")
        OldSubmission.objects.create(status="awaiting_review", requester_email="bob@example.org")
        assert "0009_submission_decided_at" not in backup.applied_migrations()["identification"]
        call_command("backup", str(tmp_path / "b"))

        call_command("migrate", verbosity=0)  # the upgraded code's database, then the loss
        _wipe()
        call_command("restore", str(tmp_path / "b"))

        out = capsys.readouterr().out
        migrated = out.partition("Migrated to this code's schema: ")[2]
        assert "identification.0009_submission_decided_at" in migrated
        assert "0009_submission_decided_at" in backup.applied_migrations()["identification"]
        restored = Submission.objects.get(pk=decided.pk)  # read with today's model: the new columns exist
        assert restored.decided_at == restored.updated_at  # the data migration ran on the restored rows
        assert Submission.objects.get(requester_email="bob@example.org").decided_at is None
        assert Schedule.objects.filter(name="obverse-apply-retention").exists()
    finally:
        call_command("migrate", verbosity=0)  # whatever happened, the next test gets today's schema


class TestPgTool:
    @staticmethod
    def _fake(folder: Path, name: str, version: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.write_text(f"#!/bin/sh\necho '{name} (PostgreSQL) {version}'\n")
        path.chmod(0o755)
        return path

    def test_it_prefers_the_servers_major_version(self, tmp_path, monkeypatch):
        self._fake(tmp_path / "a", "pg_dump", "16.4")
        exact = self._fake(tmp_path / "b", "pg_dump", "18.1")
        self._fake(tmp_path / "c", "pg_dump", "19.0")
        monkeypatch.setattr(backup, "_tool_dirs", lambda: iter([tmp_path / "a", tmp_path / "c", tmp_path / "b"]))
        assert backup.pg_tool("pg_dump", server_major=18) == exact.resolve()

    def test_it_falls_back_to_the_oldest_newer_version(self, tmp_path, monkeypatch):
        self._fake(tmp_path / "a", "pg_restore", "20.0")
        newer = self._fake(tmp_path / "b", "pg_restore", "19.2")
        monkeypatch.setattr(backup, "_tool_dirs", lambda: iter([tmp_path / "a", tmp_path / "b"]))
        assert backup.pg_tool("pg_restore", server_major=18) == newer.resolve()

    def test_it_names_what_it_found_when_only_older_tools_exist(self, tmp_path, monkeypatch):
        self._fake(tmp_path / "a", "pg_dump", "15.18")
        monkeypatch.setattr(backup, "_tool_dirs", lambda: iter([tmp_path / "a"]))
        with pytest.raises(backup.BackupError, match=r"PostgreSQL 18.*\(15\)"):
            backup.pg_tool("pg_dump", server_major=18)

    @pytest.mark.django_db
    def test_the_servers_own_tools_are_found_at_its_version(self):
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version_num")
            major = int(cursor.fetchone()[0]) // 10000
        assert backup._tool_major(backup.pg_tool("pg_dump", server_major=major)) == major
