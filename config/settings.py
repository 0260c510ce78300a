"""Obverse settings: one module, driven by environment variables (see README, "Configuration")."""

from __future__ import annotations

import ipaddress
import sys
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config import embedded_db
from config.env import development_secret_key, env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("OBVERSE_VAR_DIR", str(BASE_DIR / "var")))

# OBVERSE_ENV=production turns DEBUG off by default and makes DJANGO_SECRET_KEY mandatory.
# In development a random key is kept in var/ so `manage.py` works straight after `make run`.
ENVIRONMENT = env_str("OBVERSE_ENV", "development")
if ENVIRONMENT not in {"development", "production"}:
    raise ImproperlyConfigured(f"OBVERSE_ENV must be 'development' or 'production', not {ENVIRONMENT!r}.")
DEBUG = env_bool("DJANGO_DEBUG", ENVIRONMENT == "development")
if DEBUG and ENVIRONMENT == "production":
    # DEBUG pages show settings, SQL and source to anyone: never on a deployed site.
    raise ImproperlyConfigured("DJANGO_DEBUG must be off when OBVERSE_ENV=production.")
SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if ENVIRONMENT == "production":
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) is required when OBVERSE_ENV=production."
        )
    SECRET_KEY = development_secret_key(VAR_DIR / "secret_key")

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
# Reverse proxies whose X-Forwarded-For is believed (addresses or networks, comma-separated); without
# them the header is ignored and every client is its TCP peer (config.middleware.TrustedProxyMiddleware).
OBVERSE_TRUSTED_PROXIES = env_list("OBVERSE_TRUSTED_PROXIES", [])
for _proxy in OBVERSE_TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy, strict=False)
    except ValueError as _exc:
        raise ImproperlyConfigured(f"OBVERSE_TRUSTED_PROXIES: {_proxy!r} is not an address or network.") from _exc

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "django_q",
    "axes",
    "collection",
    "identification",
    "review",
    # Tooling (benchmarks, stress run, demo collection): listed for its management commands only.
    "bench",
]

MIDDLEWARE = [
    # First: every later middleware, DRF's throttles, django-axes and the views read the client's address.
    "config.middleware.TrustedProxyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.middleware.SecurityHeadersMiddleware",
    # Turns a login refused by django-axes into the "locked out" page (429).
    "axes.middleware.AxesMiddleware",
    # Last: refuses before any view hook reads the body (CSRF reads POST), inside the headers above.
    "config.middleware.RequestSizeLimitMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "collection.context_processors.site",
            ],
        },
    },
]

# Database: DATABASE_URL (TCP, or a Unix socket folder percent-encoded as the host), else the
# embedded PostgreSQL under var/pgdata that `make run` / `make test` start.
DATABASE_URL = env_str("DATABASE_URL") or embedded_db.database_url()
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))}
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True  # reconnect after a PostgreSQL restart
# Each process names itself to PostgreSQL ("obverse runserver", "obverse qcluster", "obverse gunicorn"), so
# pg_stat_activity, and `manage.py restore` refusing to run beside them, say which is connected.
_PROCESS = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
_PROCESS = sys.argv[1] if _PROCESS == "manage.py" and len(sys.argv) > 1 else _PROCESS
DATABASES["default"].setdefault("OPTIONS", {}).setdefault("application_name", f"obverse {_PROCESS}"[:63])
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# django-axes counts failed logins (the site's login page and the admin's) and locks the client's
# address out for a while after too many; see README, "Logins". Its backend comes first and only refuses.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("OBVERSE_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("OBVERSE_LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "config.lockout.locked_out"  # 429, with the minutes to wait
# The address the other rate limits use (config.middleware.TrustedProxyMiddleware), never a header.
AXES_CLIENT_IP_CALLABLE = "config.middleware.client_ip_address"
# Failed attempts are kept until their cool-off ends; successful logins are not logged (who signed in
# from where is personal data the museum has no use for).
AXES_DISABLE_ACCESS_LOG = True
AXES_VERBOSE = False  # no start-up banner on every command; lockouts are still logged as warnings
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-gb"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env_str("OBVERSE_MEDIA_ROOT", str(VAR_DIR / "media")))
# Media (catalogue photos, cut-outs, tiles) and the private raw uploads, through Django's storage API:
# local folders by default; with OBVERSE_STORAGE=s3 an S3 bucket (django-storages, requirements-s3.txt),
# which the web server and every worker machine then share (docs/deploy.md).
OBVERSE_STORAGE = env_str("OBVERSE_STORAGE", "local")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "private": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": ""}},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024  # form fields; files are limited separately
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# Security headers on every response (tests/config/test_security.py). Django sends nosniff,
# Referrer-Policy, Cross-Origin-Opener-Policy and X-Frame-Options; config.middleware adds the CSP and
# Permissions-Policy. No page has inline script, inline style or on* handlers, so the CSP allows none.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
OBVERSE_CONTENT_SECURITY_POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    # blob: for the preview of the photo just chosen on /identify/; OBVERSE_CSP_IMG_SRC adds origins
    # (e.g. a source's image server, for catalogue images kept only as remote links).
    "img-src": ["'self'", "blob:", *env_list("OBVERSE_CSP_IMG_SRC", [])],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "media-src": ["'self'", "blob:"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
# camera=(self): /identify/ takes a photo with the phone's camera; nothing else is used.
OBVERSE_PERMISSIONS_POLICY = "camera=(self), microphone=(), geolocation=(), payment=(), usb=()"
# OBVERSE_HTTPS (default: on whenever DEBUG is off) says the site is reached over HTTPS: secure
# cookies, HSTS and the redirect to https. Turn it off only for a plain-HTTP intranet test install;
# `manage.py check --deploy` then rightly warns.
OBVERSE_HTTPS = env_bool("OBVERSE_HTTPS", not DEBUG)
SILENCED_SYSTEM_CHECKS: list[str] = []
if OBVERSE_HTTPS:
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")  # the proxy in front must set or strip it
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 60 * 60 * 24 * 30)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        # security.W021 (HSTS preload) is silenced deliberately: entering a domain in the browsers'
        # preload list is a near-irreversible choice of the domain's owner (every subdomain HTTPS-only),
        # not a default an application may make. DJANGO_HSTS_PRELOAD=1 opts in. Nothing else is silenced.
        SILENCED_SYSTEM_CHECKS.append("security.W021")

# Email: printed to the console unless a real backend is configured.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Obverse <noreply@localhost>")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "DEFAULT_FILTER_BACKENDS": ["collection.api.params.StrictFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "collection.api.schema.AutoSchema",
    # Every API error, whatever raised it, answers {"errors": {field: [reasons]}}.
    "EXCEPTION_HANDLER": "collection.api.errors.exception_handler",
    # The throttles count REMOTE_ADDR, which TrustedProxyMiddleware has set: DRF must not read
    # X-Forwarded-For itself (by default it believes whatever a client sends there).
    "NUM_PROXIES": 0,
    "DEFAULT_THROTTLE_RATES": {
        "submissions_anon": env_str("OBVERSE_API_ANON_RATE", "30/hour"),
        "submissions_user": env_str("OBVERSE_API_USER_RATE", "600/hour"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Obverse API",
    "DESCRIPTION": (
        "Read the digital collection and identify specimens from photographs.\n\n"
        "This document is the contract of API v1, served under /api/v1/. Within v1 changes only add: new "
        "endpoints, new optional parameters and body fields, new response fields (ignore unknown ones), new "
        "links, accepting input that used to be refused. Anything else (removing or renaming, changing a type "
        "or meaning, new required input, refusing accepted input, a new enumeration value, a different status "
        "code) is a new version, /api/v2/, served beside v1 for an announced transition.\n\n"
        'Every error is JSON {"errors": {field: [reasons]}} (non_field_errors for the request as a whole). '
        "Each operation lists its statuses; a method an endpoint does not offer is a 405 (a 403 for a write "
        "to the read-only catalogue without credentials), any other URL under /api/ a 404."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Operation ids and tags are named after the path below /api/ (v1_items_list): pinned, because an
    # estimated prefix changed them all when paths outside /api/ appeared, and generated clients name
    # their methods after them.
    "SCHEMA_PATH_PREFIX": r"/api/",
    # Request bodies get their own components, so uploads are documented as files (format: binary).
    "COMPONENT_SPLIT_REQUEST": True,
    # Items and submissions both have a `status` enum; name them apart in the schema.
    "ENUM_NAME_OVERRIDES": {
        "ItemStatusEnum": "collection.models.ItemStatus",
        "SubmissionStatusEnum": "identification.models.SubmissionStatus",
    },
}

# A cache shared by web and worker processes (django-q2 keeps the worker heartbeat in it, which
# /healthz reads); the table is created by a migration.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "obverse_cache"}}

# Background tasks: django-q2 with the ORM broker on the same PostgreSQL. Workers hold models in
# memory, so they are recycled after a number of tasks; `timeout` stays below `retry` so a task is
# never handed to a second worker while the first still runs it.
# Two clusters on one broker: the default one processes visitors' photos (short tasks), the ``bulk``
# one the catalogue's indexing and training (identification.jobs), so a photo never waits behind
# them. Start the bulk one with ``Q_CLUSTER_NAME=bulk manage.py qcluster`` (``make run`` starts both).
# A task's time limit must stay below ``retry``: the broker hands a task whose worker died to
# another after ``retry`` seconds.
OBVERSE_BULK_TIMEOUT_S = env_int("OBVERSE_BULK_TIMEOUT_S", 4 * 3600)  # a training on a large catalogue
Q_CLUSTER = {
    "name": "obverse",
    "orm": "default",
    "workers": env_int("OBVERSE_WORKERS", 2),
    "recycle": 200,
    "timeout": 600,
    "retry": 720,
    "max_attempts": 3,
    "queue_limit": 20,
    "catch_up": False,
    "sync": env_bool("OBVERSE_Q_SYNC", False),
    "ALT_CLUSTERS": {
        "bulk": {
            "workers": env_int("OBVERSE_BULK_WORKERS", 1),
            "timeout": OBVERSE_BULK_TIMEOUT_S,
            "retry": OBVERSE_BULK_TIMEOUT_S + 600,
            "max_attempts": 3,
            "queue_limit": 4,
        }
    },
}
# The broker: PostgreSQL itself by default (nothing more to run), or Redis for several worker machines
# (OBVERSE_BROKER=redis; `make run` starts a local redis-server when the URL is on this machine).
# Redis does not re-deliver a task whose worker died; the sweep (identification.sweep) requeues it.
OBVERSE_BROKER = env_str("OBVERSE_BROKER", "orm")
OBVERSE_REDIS_URL = env_str("OBVERSE_REDIS_URL", "redis://127.0.0.1:6379/0")
if OBVERSE_BROKER == "redis":
    Q_CLUSTER.pop("orm")
    Q_CLUSTER["redis"] = OBVERSE_REDIS_URL
elif OBVERSE_BROKER != "orm":
    raise ImproperlyConfigured(f"OBVERSE_BROKER must be 'orm' or 'redis', not {OBVERSE_BROKER!r}.")
OBVERSE_INDEX_CHUNK = env_int("OBVERSE_INDEX_CHUNK", 200)
# An indexing job that has not moved for this long lost a chunk (a worker died; Redis does not deliver
# it again): the sweep queues its unfinished chunks again.
OBVERSE_BULK_STALE_S = env_int("OBVERSE_BULK_STALE_S", 1800)  # catalogue images per indexing task (~20 s each)

# Obverse's own settings.
OBVERSE_MODELS_DIR = Path(env_str("OBVERSE_MODELS_DIR", str(VAR_DIR / "models")))
OBVERSE_PRIVATE_UPLOADS = Path(env_str("OBVERSE_PRIVATE_UPLOADS", str(VAR_DIR / "uploads")))  # never served
STORAGES["private"]["OPTIONS"]["location"] = str(OBVERSE_PRIVATE_UPLOADS)
if OBVERSE_STORAGE == "s3":
    _s3 = {
        "bucket_name": env_str("OBVERSE_S3_BUCKET"),
        "endpoint_url": env_str("OBVERSE_S3_ENDPOINT_URL") or None,  # another S3-compatible service
        "region_name": env_str("OBVERSE_S3_REGION") or None,
        "file_overwrite": False,
    }
    STORAGES["default"] = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {**_s3, "location": "media"}}
    # Raw uploads: never public; the workers read them with the bucket's credentials.
    STORAGES["private"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {**_s3, "location": "uploads", "default_acl": "private", "querystring_auth": True},
    }
elif OBVERSE_STORAGE != "local":
    raise ImproperlyConfigured(f"OBVERSE_STORAGE must be 'local' or 's3', not {OBVERSE_STORAGE!r}.")
OBVERSE_MAX_UPLOAD_BYTES = env_int("OBVERSE_MAX_UPLOAD_BYTES", 20 * 1024 * 1024)
# A whole request (two photos and the form) may not be larger: refused with 413 before Django reads it,
# so an oversized upload never fills the temporary folder (config.middleware.RequestSizeLimitMiddleware).
OBVERSE_MAX_REQUEST_BYTES = env_int("OBVERSE_MAX_REQUEST_BYTES", 2 * OBVERSE_MAX_UPLOAD_BYTES + 1024 * 1024)
OBVERSE_ANON_SUBMISSIONS_PER_HOUR = env_int("OBVERSE_ANON_SUBMISSIONS_PER_HOUR", 20)
OBVERSE_PROCESSING_TIMEOUT_S = env_int("OBVERSE_PROCESSING_TIMEOUT_S", 540)  # below Q_CLUSTER timeout
OBVERSE_PROCESSING_MAX_ATTEMPTS = env_int("OBVERSE_PROCESSING_MAX_ATTEMPTS", 3)
# A received submission untouched this long with no queued task was lost by the queue: the sweep requeues it.
OBVERSE_SWEEP_RECEIVED_AFTER_S = env_int("OBVERSE_SWEEP_RECEIVED_AFTER_S", 300)
# Classical clean-up (upscale, median, unsharp) of small coins before they are described: off, as it
# did not raise recall on phone-like photos (docs/ml-notes.md, "Enhancement, with and without").
OBVERSE_ENHANCE = env_bool("OBVERSE_ENHANCE", False)
OBVERSE_HNSW_EF_SEARCH = env_int("OBVERSE_HNSW_EF_SEARCH", 100)
# Above this many embeddings an unfiltered search always reads the HNSW index (identification.search).
OBVERSE_HNSW_PIN_ABOVE = env_int("OBVERSE_HNSW_PIN_ABOVE", 50_000)
OBVERSE_INDEX_ON_IMPORT = env_bool("OBVERSE_INDEX_ON_IMPORT", True)  # embed imported images in the background
OBVERSE_DEMO_DIR = Path(env_str("OBVERSE_DEMO_DIR", str(VAR_DIR / "demo")))
# Raw uploads (with their EXIF: GPS, camera) and the sender's name, email and address are removed this many
# days after a submission is decided (identification.retention; daily schedule and `manage.py apply_retention`).
OBVERSE_RETENTION_DAYS = env_int("OBVERSE_RETENTION_DAYS", 30)
OBVERSE_REVIEW_CONSENSUS = env_int("OBVERSE_REVIEW_CONSENSUS", 2)  # agreeing volunteers needed for a proposal
OBVERSE_REVIEW_CLAIM_MINUTES = env_int("OBVERSE_REVIEW_CLAIM_MINUTES", 30)
# Separation of duties: who reviewed a submission may not approve its proposal. On only for a museum of one.
OBVERSE_ALLOW_SELF_APPROVAL = env_bool("OBVERSE_ALLOW_SELF_APPROVAL", False)
OBVERSE_SITE_URL = env_str("OBVERSE_SITE_URL", "http://127.0.0.1:8000")  # links in emails
# The published dataset (Nomisma's VoID: title, description, publisher and licence are required).
# Records derived from the ANS's are ODbL, whence the default licence.
OBVERSE_DATASET_TITLE = env_str("OBVERSE_DATASET_TITLE", "Obverse numismatic collection")
OBVERSE_DATASET_DESCRIPTION = env_str(
    "OBVERSE_DATASET_DESCRIPTION", "Coins of the collection, linked to their types in Nomisma.org's type corpora."
)
OBVERSE_DATASET_PUBLISHER = env_str("OBVERSE_DATASET_PUBLISHER", "Obverse")
OBVERSE_DATASET_LICENCE = env_str("OBVERSE_DATASET_LICENCE", "http://opendatacommons.org/licenses/odbl/")
# Where `manage.py export_rdf` writes the dump by default, which /linked-data/nomisma.rdf serves.
OBVERSE_LINKED_DATA_DIR = Path(env_str("OBVERSE_LINKED_DATA_DIR", str(VAR_DIR / "linked-data")))
OBVERSE_SHARED_DATA_DIR = Path(env_str("OBVERSE_SHARED_DATA_DIR", str(BASE_DIR.parent / "shared" / "data")))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # django-axes logs every reset at INFO (each login resets); lockouts are WARNING and still show.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "axes": {"level": "WARNING"}},
}
