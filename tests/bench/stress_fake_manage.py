"""``manage.py`` with the fake pipeline, for the stress test: web, worker and queue run for real, fast.

Run as ``python -m tests.bench.stress_fake_manage <command> …`` from the repository root. The
pipeline is replaced after Django is set up (``tests.fakes.install_in_process``); qcluster forks its
workers from this process, so they inherit the replacement.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import execute_from_command_line

    from tests.fakes import install_in_process

    install_in_process()
    execute_from_command_line([sys.argv[0], *sys.argv[1:]])


if __name__ == "__main__":
    main()
