"""Test settings: the real settings, with fast hashing, tasks run inline and media in a temp folder."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key")
os.environ.setdefault("OBVERSE_ENV", "production")  # test what is deployed
os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "0")

from config.settings import *  # noqa: E402,F403
from config.settings import DATABASES, Q_CLUSTER  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
# Per-test folders are set by an autouse fixture in tests/conftest.py; these are only fallbacks.
MEDIA_ROOT = os.environ.get("OBVERSE_MEDIA_ROOT") or os.path.join(tempfile.gettempdir(), "obverse-test-media")
OBVERSE_PRIVATE_UPLOADS = os.environ.get("OBVERSE_PRIVATE_UPLOADS") or os.path.join(
    tempfile.gettempdir(), "obverse-test-uploads"
)
OBVERSE_INDEX_ON_IMPORT = False  # import tests need no ML; indexing has its own tests
STATIC_ROOT = None  # pages are served from the app folders in tests; nothing is collected
Q_CLUSTER = {**Q_CLUSTER, "sync": True}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "private": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": OBVERSE_PRIVATE_UPLOADS},
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Several test runs may share one server (developers, helpers): OBVERSE_TEST_DB_SUFFIX keeps them apart.
DATABASES["default"]["TEST"] = {"NAME": f"test_obverse{os.environ.get('OBVERSE_TEST_DB_SUFFIX', '')}"}
DATABASES["default"]["CONN_MAX_AGE"] = 0
