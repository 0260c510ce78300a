"""/healthz: the database, the vector extension, the worker heartbeat, the models folder and the trained parts."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from mlcore.modelfiles import verify_all

WORKER_STALE_AFTER = timedelta(minutes=2)


def _database() -> tuple[str, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            row = cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised
        return f"error: {exc.__class__.__name__}", "unknown"
    return "ok", (f"ok ({row[0]})" if row else "missing")


def _worker() -> str:
    from django_q.status import Stat

    try:
        stats = Stat.get_all()
    except Exception as exc:  # noqa: BLE001
        return f"error: {exc.__class__.__name__}"
    if not stats:
        return "not running"
    newest = max(stat.timestamp for stat in stats)
    if timezone.now() - newest > WORKER_STALE_AFTER:
        return f"stale (last heartbeat {newest.isoformat()})"
    return "ok"


def _trained() -> str:
    """The trained parts: reported, not failing the check (identification works, less well, without them)."""
    from mlcore.train import current_recipes
    from mlcore.versions import TRAIN_COMMAND, active_version, stale_kind

    models_dir = settings.OBVERSE_MODELS_DIR
    active = active_version(models_dir)
    if not active:
        return f"none yet (run {TRAIN_COMMAND})"
    stale = stale_kind(models_dir, active, current_recipes(models_dir))
    if stale:
        return f"stale: {active} was trained for another {stale} recipe (run {TRAIN_COMMAND})"
    return f"ok ({active})"


def _jobs() -> list[dict]:
    """The catalogue's bulk work queued or running (identification.jobs), with progress and time left."""
    from identification.jobs import active_jobs

    return [
        {
            "kind": job.kind,
            "status": job.status,
            "done": job.done,
            "failed": job.failed,
            "total": job.total,
            "progress": None if job.progress is None else round(job.progress, 3),
            "seconds_left": None if job.seconds_left is None else round(job.seconds_left),
            "detail": job.detail,
        }
        for job in active_jobs()
    ]


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    database, vector = _database()
    models = verify_all(settings.OBVERSE_MODELS_DIR)
    checks = {
        "database": database,
        "vector_extension": vector,
        "worker": _worker(),
        "models": models,
        "trained_models": _trained(),
        "background_jobs": _jobs() if database == "ok" else [],
    }
    healthy = database == "ok" and vector.startswith("ok") and all(v == "ok" for v in models.values())
    # The worker may legitimately be down (web-only node), and a catalogue may not be trained yet, so both
    # are reported but do not fail the check.
    return JsonResponse({"status": "ok" if healthy else "error", "checks": checks}, status=200 if healthy else 503)
