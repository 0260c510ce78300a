"""django-q2 tasks: thin wrappers that take ids and call a service (safe to run twice).

Their dotted paths are what the queue stores (``async_task("identification.tasks.…")`` and the
sweep's Schedule), so they keep these names.
"""

from __future__ import annotations

from identification import jobs, services, sweep


def process_submission(submission_id: str) -> bool:
    return services.submission_process(submission_id=submission_id)


def index_chunk(chunk_id: int) -> int:
    """Index one chunk of an indexing job (the bulk cluster); returns how many images are indexed."""
    return jobs.index_chunk_run(chunk_id=chunk_id)


def train_models(job_id: int) -> str:
    """Train a new model version from the catalogue (the bulk cluster; one at a time), then index for it."""
    return jobs.training_run(job_id=job_id)


def sweep_submissions() -> str:
    """Requeue or fail submissions the queue lost or whose worker died (run every few minutes by a Schedule)."""
    report = sweep.submission_sweep_stuck()
    chunks = jobs.index_chunks_requeue_stale()
    return f"requeued {len(report.requeued)}, failed {len(report.failed)}; indexing chunks queued again {len(chunks)}"
