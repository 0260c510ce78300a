from django.apps import AppConfig


class BenchConfig(AppConfig):
    """Installed only so that Django finds the tools' management commands; it has no models."""

    name = "bench"
    verbose_name = "Benchmarks and demo data"
