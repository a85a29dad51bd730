"""One env-driven settings file: embedded defaults, scaled out by environment variables only."""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: str = "False") -> bool:
    """Return a boolean from the environment; refuse anything but True/False/1/0."""
    value = os.getenv(name, default).strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise ValueError(f"{name} must be True or False, not {value!r}")


def envint(name: str, default: int) -> int:
    """Return an integer from the environment."""
    return int(os.getenv(name, str(default)))


def envsecret(name: str, default: str = "") -> str:
    """Return a secret from NAME_FILE (a mounted secret) first, then NAME."""
    path = os.getenv(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.getenv(name, default)


DEBUG = envbool("DEBUG", "True")
SECRET_KEY = envsecret("SECRET_KEY", "dev-only-insecure-secret-key-change-me")
# Extra keys that may still decrypt provider credentials during key rotation (newest first).
SECRET_KEY_FALLBACKS = [k for k in envsecret("SECRET_KEY_FALLBACKS").split(",") if k]
SALT_KEY = [k for k in envsecret("FIELD_ENCRYPTION_SALT", "mediahub-fields").split(",") if k]
ALLOWED_HOSTS = [h for h in os.getenv("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in os.getenv("CSRF_TRUSTED_ORIGINS", "").split(",") if o]
SITE_URL = os.getenv("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_q",
    "storages",
    "accounts",
    "media_jobs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

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
            ],
        },
    },
]

# Database: SQLite so a fresh checkout just works; DATABASE_URL for PostgreSQL.
DATA_DIR = Path(os.getenv("DATA_DIR", str(BASE_DIR / "var")))
DATA_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{DATA_DIR / 'db.sqlite3'}",
        conn_max_age=envint("DB_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Workers and web share the file: wait for locks instead of failing at once.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
    # A file (not :memory:) so worker threads and processes in tests share it; one per test run
    # so two runs on one checkout don't trample each other.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / f"test-db-{os.getpid()}.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:home"
LOGOUT_REDIRECT_URL = "login"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve straight from the app and static folders until `collectstatic` has run (development, tests).
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# Files: local disk by default; S3 (or any S3-compatible store) when S3_BUCKET is set.
MEDIA_ROOT = Path(os.getenv("MEDIA_ROOT", str(DATA_DIR / "media")))
MEDIA_URL = "/media/"
S3_BUCKET = os.getenv("S3_BUCKET", "")
if S3_BUCKET:
    DEFAULT_STORAGE = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": os.getenv("S3_ENDPOINT_URL") or None,
            "region_name": os.getenv("S3_REGION", "us-east-1"),
            "access_key": envsecret("S3_ACCESS_KEY_ID") or None,
            "secret_key": envsecret("S3_SECRET_ACCESS_KEY") or None,
            "default_acl": None,
            "file_overwrite": True,
            "querystring_auth": True,
            "querystring_expire": envint("S3_PRESIGN_SECONDS", 3600),
            # django-storages 1.14 defaults this to 0: the whole object would sit in memory.
            "max_memory_size": 8 * 1024 * 1024,
            "addressing_style": os.getenv("S3_ADDRESSING_STYLE", "path"),
            "signature_version": "s3v4",
        },
    }
else:
    DEFAULT_STORAGE = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT)},
    }
STORAGES = {
    "default": DEFAULT_STORAGE,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Uploads: anything over 2 MB spools to a temp file, never RAM.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_TEMP_DIR = os.getenv("FILE_UPLOAD_TEMP_DIR") or None
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# Task queue: django-q2 on the ORM by default, Redis when REDIS_URL is set.
REDIS_URL = os.getenv("REDIS_URL", "")
Q_TIMEOUT = envint("Q_TIMEOUT", 3600)
Q_CLUSTER = {
    # Parallel test processes (pytest-xdist) sharing one broker each get their own queue.
    "name": os.getenv("Q_NAME", "mediahub")
    + (f"-{os.environ['PYTEST_XDIST_WORKER']}" if os.getenv("PYTEST_XDIST_WORKER") else ""),
    "workers": envint("Q_WORKERS", 2),
    "recycle": 50,
    # A task runs at most `timeout` seconds and is handed out again after `retry`: retry > timeout.
    "timeout": Q_TIMEOUT,
    "retry": Q_TIMEOUT + envint("Q_RETRY_MARGIN", 300),
    "max_attempts": 3,
    "ack_failures": True,
    "save_limit": 500,
    "catch_up": False,
    "poll": 0.5,
    "label": "Tasks",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
Q_SYNC = envbool("Q_SYNC", "False")
if Q_SYNC:
    Q_CLUSTER["sync"] = True

# Jobs: a running job renews its lease while it works; the reconciler resumes lapsed leases.
JOB_LEASE_SECONDS = envint("JOB_LEASE_SECONDS", 120)
JOB_HEARTBEAT_SECONDS = envint("JOB_HEARTBEAT_SECONDS", 5)
RECONCILE_INTERVAL_MINUTES = envint("RECONCILE_INTERVAL_MINUTES", 1)
JOB_MAX_ATTEMPTS = envint("JOB_MAX_ATTEMPTS", 5)

# Intake
INTAKE_DEFAULT_MAX_FILE_SIZE = envint("INTAKE_DEFAULT_MAX_FILE_SIZE", 500 * 1024 * 1024)
INTAKE_URL_TIMEOUT = envint("INTAKE_URL_TIMEOUT", 120)
INTAKE_URL_MAX_REDIRECTS = 5
# Only for tests and closed networks: CIDRs that URL intake may reach although they are not public.
INTAKE_URL_ALLOW_NETWORKS = [n for n in os.getenv("INTAKE_URL_ALLOW_NETWORKS", "").split(",") if n]
# Extra CA bundle for URL intake (tests use a self-signed certificate).
INTAKE_URL_CA_BUNDLE = os.getenv("INTAKE_URL_CA_BUNDLE", "")

# Engine
FFMPEG_BINARY = os.getenv("FFMPEG_BINARY", "")
ENGINE_THREADS = envint("ENGINE_THREADS", 0)
# ffmpeg processes one long job may run side by side (0: one per core, at most 4).
ENGINE_WORKERS = envint("ENGINE_WORKERS", 0)

# Remote providers: each base URL comes from PROVIDER_<KIND>_BASE_URL, defaulting to the real
# service; SANDBOX_PROVIDERS=1 mounts offline emulators at /sandbox/ and points providers there.
SANDBOX_PROVIDERS = envbool("SANDBOX_PROVIDERS", "False")
PROVIDER_DEFAULT_URLS = {
    "auphonic": "https://auphonic.com/api/",
    "auphonic_oauth": "https://auphonic.com/oauth2/",
    "dolby": "https://api.dolby.com/",
    "dolby_auth": "https://api.dolby.io/v1/auth/token",
    "apyhub": "https://api.apyhub.com/",
    "audioscrape": "https://www.audioscrape.com/api/",
    "respeecher": "https://gateway.respeecher.com/",
}
SANDBOX_PATHS = {
    "auphonic": "auphonic/api/",
    "auphonic_oauth": "auphonic/oauth2/",
    "dolby": "dolby/",
    "dolby_auth": "dolby/v1/auth/token",
    "apyhub": "apyhub/",
    "audioscrape": "audioscrape/api/",
    "respeecher": "respeecher/",
}
PROVIDER_BASE_URLS = {
    kind: os.getenv(
        f"PROVIDER_{kind.upper()}_BASE_URL",
        f"{SITE_URL}/sandbox/{SANDBOX_PATHS[kind]}" if SANDBOX_PROVIDERS else default,
    )
    for kind, default in PROVIDER_DEFAULT_URLS.items()
}
# Dolby's token endpoint has its own variable name in the docs we follow.
PROVIDER_BASE_URLS["dolby_auth"] = os.getenv(
    "PROVIDER_DOLBY_AUTH_URL", PROVIDER_BASE_URLS["dolby_auth"]
)
# OAuth2 apps registered by the operator (the authorization-code flow needs them).
AUPHONIC_CLIENT_ID = os.getenv("AUPHONIC_CLIENT_ID", "sandbox-client" if SANDBOX_PROVIDERS else "")
AUPHONIC_CLIENT_SECRET = envsecret(
    "AUPHONIC_CLIENT_SECRET", "sandbox-secret" if SANDBOX_PROVIDERS else ""
)
# Polling of remote jobs: seconds between polls, per poll number; the last repeats.
PROVIDER_POLL_BACKOFF = [5, 10, 30, 60]
PROVIDER_TRANSIENT_LIMIT = envint("PROVIDER_TRANSIENT_LIMIT", 8)
# A presigned input URL must outlive the provider's queue.
PROVIDER_INPUT_URL_SECONDS = envint("PROVIDER_INPUT_URL_SECONDS", 24 * 3600)
# ApyHub's URL-submit body is undocumented: the field that carries the video's URL.
APYHUB_URL_FIELD = os.getenv("APYHUB_URL_FIELD", "url")

# Email: console by default so invitations work offline.
EMAIL_BACKEND = os.getenv("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = os.getenv("DEFAULT_FROM_EMAIL", "mediahub@localhost")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Media hub API",
    "DESCRIPTION": "Datasets, items, presets and jobs for audio and video processing.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
