"""django-q2 tasks: thin wrappers that take ids and call a service (safe to run twice).

Their dotted paths are what the queue stores (``async_task("identification.tasks.…")`` and the
sweep's Schedule), so they keep these names.
"""

from __future__ import annotations

from identification import indexing, retention, services, sweep, training


def process_submission(submission_id: str) -> bool:
    return services.submission_process(submission_id=submission_id)


def index_catalogue_images(image_ids: list[int]) -> int:
    """Index a batch of catalogue images; returns how many were indexed."""
    return sum(indexing.catalogue_image_index(image_id=image_id) for image_id in image_ids)


def train_models() -> str:
    """Train a new model version from the catalogue and re-index it (long; one at a time)."""
    return training.models_train().version


def sweep_submissions() -> str:
    """Requeue or fail submissions the queue lost or whose worker died (run every few minutes by a Schedule)."""
    report = sweep.submission_sweep_stuck()
    return f"requeued {len(report.requeued)}, failed {len(report.failed)}"


def apply_retention() -> str:
    """Remove the raw photos and contact details of submissions decided OBVERSE_RETENTION_DAYS ago (daily Schedule)."""
    report = retention.retention_apply()
    return f"cleared {len(report.cleared)} submissions, removed {len(report.orphans)} orphan upload folders"
