"""Training what Obverse learns from its catalogue into a new model version, then switching search to it.

The catalogue's images are the labelled data (``identification.catalogue``); other sources of
examples register themselves here (``FEEDBACK_SOURCES``): the review workflow, a higher layer that
this module does not import, adds its curator-approved identifications from its ``AppConfig``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from django.conf import settings
from django.core.exceptions import ValidationError

from identification import pipeline_cache
from identification.catalogue import catalogue_records
from identification.indexing import catalogue_index_pending, catalogue_pending_images, catalogue_prune_embeddings
from identification.pipeline_cache import embedding_version

# Each source turns the training records into extra examples (``mlcore.train.FeedbackExample``).
FEEDBACK_SOURCES: list[Callable[[list], list]] = []


def feedback_source_register(source: Callable[[list], list]) -> None:
    """Add a source of training examples (once; an app registers it in its ``AppConfig.ready``)."""
    if source not in FEEDBACK_SOURCES:
        FEEDBACK_SOURCES.append(source)


def models_train(
    *,
    seed: int = 0,
    limit: int | None = None,
    reindex: bool = True,
    activate: bool = True,
    progress=None,
    use_reviews: bool = True,
    exclude_record_ids: Sequence[str] = (),
):
    """Train every learned part from the catalogue into a new, active model version.

    With ``use_reviews`` the registered feedback sources are asked for examples: the review
    workflow's curator-approved matches and the look-alikes ranked above them or rejected
    (``review.training.feedback_examples``) become positives and hard negatives;
    ``report.metrics["feedback"]`` says how many pairs were used. ``exclude_record_ids`` leaves
    specimens out (the benchmark's query coins).
    A new version may change the embedding (a learned projection), so by default the catalogue is
    re-embedded for it *before* it is activated: searches keep using the previous version's complete
    index meanwhile (with 300,000 coins a re-index takes hours). Images added during the re-index
    are caught up just after the switch, and the previous version's embeddings are pruned only once
    every image has one for the new version. ``reindex=False`` activates the new version at once,
    or, with ``activate=False`` too, leaves that to the caller (``identification.jobs`` indexes the
    catalogue for it in chunks first). Returns mlcore's TrainingReport.
    """
    from mlcore.train import train_all
    from mlcore.versions import version_activate

    records = catalogue_records(exclude_record_ids=set(exclude_record_ids))
    records = records[:limit] if limit else records
    if len(records) < 4:
        raise ValidationError(f"The catalogue has {len(records)} specimens with images; training needs more.")
    feedback = [example for source in FEEDBACK_SOURCES for example in source(records)] if use_reviews else []
    models_dir = settings.OBVERSE_MODELS_DIR
    report = train_all(records, models_dir=models_dir, seed=seed, progress=progress, feedback=feedback, activate=False)
    if reindex:
        catalogue_index_pending(pipeline_cache.get_pipeline(version=report.version), progress=progress)
    elif not activate:
        return report
    version_activate(models_dir, report.version)
    report.activated = True
    pipeline_cache.reset_pipeline()
    if reindex:
        pipeline = pipeline_cache.get_pipeline()
        catalogue_index_pending(pipeline, progress=progress)  # images added while the new version was indexed
        model = embedding_version(pipeline)
        if not catalogue_pending_images(model=model).exists():
            catalogue_prune_embeddings(keep=model)
    return report
