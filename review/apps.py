from django.apps import AppConfig


class ReviewConfig(AppConfig):
    """Volunteers' reviews and curators' approvals of submissions (its models keep the identification label)."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "review"
    verbose_name = "Review"

    def ready(self) -> None:
        # Training (identification, the layer below) learns from approved reviews through this hook.
        from identification.training import feedback_source_register
        from review.training import feedback_examples

        feedback_source_register(feedback_examples)
