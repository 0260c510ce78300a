"""``manage.py`` with the fake pipeline, for the stress test: web, worker and queue run for real, fast.

Run as ``python -m tests.config.stress_fake_manage <command> …`` from the repository root. The
pipeline is replaced after Django is set up and before any command module imports it; qcluster
forks its workers from this process, so they inherit the replacement.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import execute_from_command_line

    from identification import pipeline, services
    from tests.identification.fakes import FakePipeline

    fake = FakePipeline()
    pipeline.get_pipeline = services.get_pipeline = lambda version=None: fake
    execute_from_command_line([sys.argv[0], *sys.argv[1:]])


if __name__ == "__main__":
    main()
