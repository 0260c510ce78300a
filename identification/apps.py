from django.apps import AppConfig


class IdentificationConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "identification"
    verbose_name = "Identification"

    def ready(self) -> None:
        # An import into the catalogue (the layer below) queues the new images for search indexing.
        from collection.importers.base import images_imported_hook_register
        from identification.indexing import catalogue_index_enqueue

        images_imported_hook_register(catalogue_index_enqueue)
