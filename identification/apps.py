from django.apps import AppConfig


class IdentificationConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "identification"
    verbose_name = "Identification"

    def ready(self) -> None:
        # An import into the catalogue (the layer below) queues the new images for search indexing.
        from collection.importers.base import images_imported_hook_register
        from identification.jobs import index_job_start

        images_imported_hook_register(index_job_start)
