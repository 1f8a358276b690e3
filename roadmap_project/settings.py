"""Settings from the environment (DESIGN §8); the defaults are the embedded mode."""

import json
import os
import re
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from roadmap_project.openapi import VALIDATION_ERROR_COMPONENTS

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEVELOPMENT_SECRET_KEY = "django-insecure-development-key-do-not-use-in-production"
SECRET_KEY = os.environ.get("SECRET_KEY", DEVELOPMENT_SECRET_KEY)
DEBUG = env_bool("DEBUG", True)
if not DEBUG and SECRET_KEY == DEVELOPMENT_SECRET_KEY:
    raise ImproperlyConfigured("DEBUG=0 needs a real SECRET_KEY; refusing to start.")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
# Browser frontends on other origins ("https://app.example.com", scheme and host and
# port, as the browser sends Origin): REST through django-cors-headers, and the
# WebSocket origin check (notifications.origins). Empty: same origin only.
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS", "")
# No credentials: a frontend on another origin authenticates with
# `Authorization: Token` (REST; the header is in the library's default
# CORS_ALLOW_HEADERS) or `?token=` (event streams), which need none. Session cookies
# stay same-origin (admin, browsable API, this site's pages), so a listed origin's
# script can never act with a logged-in operator's cookie: the WebSocket origin
# check honours a cookie from a listed origin only when this is True.
CORS_ALLOW_CREDENTIALS = False
# Throttled responses say when to try again (docs: RETRY_AFTER); let scripts read it.
CORS_EXPOSE_HEADERS = ["Retry-After"]

# --- HTTPS (docs/deployment.md) ----------------------------------------------
# Production is HTTPS, with TLS ended at a proxy that sets X-Forwarded-Proto (and
# overwrites any the client sent): requests are secure when it says "https", so
# redirects and pagination links are https:// too. INSECURE_HTTP=1 is the one,
# explicit opt-out for plain HTTP on a private network: no redirect, no Secure
# cookies, no HSTS, and the header is not trusted (no TLS proxy sets it there);
# `check --deploy` then warns, on purpose.
INSECURE_HTTP = env_bool("INSECURE_HTTP", False)
HTTPS_ONLY = not DEBUG and not INSECURE_HTTP
SECURE_PROXY_SSL_HEADER = None if INSECURE_HTTP else ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = HTTPS_ONLY
# Load balancers probe the app over plain HTTP, without the proxy's header.
SECURE_REDIRECT_EXEMPT = [r"^api/v1/health/?$"]
SESSION_COOKIE_SECURE = HTTPS_ONLY
CSRF_COOKIE_SECURE = HTTPS_ONLY
SECURE_HSTS_SECONDS = 365 * 24 * 3600 if HTTPS_ONLY else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS_ONLY
SECURE_HSTS_PRELOAD = HTTPS_ONLY
# Django's debug page and error reports hide settings by name (KEY, PASS, TOKEN…);
# this filter also hides connection URLs, which carry passwords in their value.
DEFAULT_EXCEPTION_REPORTER_FILTER = "roadmap_project.reporting.SettingsHidingReporterFilter"

INSTALLED_APPS = [
    "daphne",
    "roadmap_project.apps.AdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "corsheaders",
    "roadmaps",
    "notifications",
    "generation",
]

MIDDLEWARE = [
    # First, as django-cors-headers asks: every response, including those other
    # middleware return early (redirects, CommonMiddleware's), carries its headers,
    # and a preflight is answered before anything else runs.
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "roadmap_project.urls"
ASGI_APPLICATION = "roadmap_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "roadmap_project" / "templates"],
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

# --- Database ---------------------------------------------------------------
SQLITE_PATH = VAR_DIR / "db.sqlite3"
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{SQLITE_PATH}"), conn_max_age=0
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Django's backend, with this process's writers queued on a lock rather than
    # on SQLite's sleeping busy handler (roadmap_project/patches/django.py).
    # SQLITE_QUEUE_WRITERS=0 keeps Django's own, for comparison in `make bench`.
    if env_bool("SQLITE_QUEUE_WRITERS", True):
        DATABASES["default"]["ENGINE"] = "roadmap_project.db.sqlite3"
    DATABASES["default"]["OPTIONS"] = {
        # IMMEDIATE takes the write lock at BEGIN, so conditional UPDATEs never
        # deadlock on lock upgrades; WAL lets readers run beside the writer.
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not shared-cache memory: tests run threads and subprocesses against it.
    # One per test process, so concurrent test runs never drop each other's tables.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"}

# Threads that run requests' synchronous code (views, ORM); each keeps its connection.
# Few, on purpose: the work is short and holds the GIL (4 measured best on 2 cores;
# docs/performance.md). 0: Django's own handler, a new thread per request.
REQUEST_THREADS = int(os.environ.get("REQUEST_THREADS", "4"))
# Connections live as long as the thread that opened them: the handler's lanes
# (roadmap_project/handlers.py) and the engine's worker threads are long-lived, so
# each keeps one, checked before each use (CONN_HEALTH_CHECKS). With a thread per
# request (REQUEST_THREADS=0) a kept connection would leak with its thread: close
# each time, and then the engine's threads too open one per call.
DATABASES["default"]["CONN_MAX_AGE"] = None if REQUEST_THREADS else 0
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, cache, Celery broker -----------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # Pub/sub: one SUBSCRIBE per stream or topic per process (the hub's),
            # one PUBLISH per event (docs/decisions/0007-event-hub.md).
            "BACKEND": "roadmap_project.patches.channels_redis.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "roadmap_project.patches.channels.InMemoryChannelLayer",
            # One channel per process (the hub's) takes every event it watches.
            "CONFIG": {"capacity": 10000, "expiry": 60},
        }
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Background tasks (django.tasks) ----------------------------------------
TASK_BACKEND = os.environ.get("TASK_BACKEND", "inprocess")
TASK_BACKENDS = {
    "inprocess": {"BACKEND": "generation.engine.InProcessBackend"},
    "immediate": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"},
    "celery": {
        "BACKEND": "django_tasks_celery.CeleryBackend",
        "OPTIONS": {"CELERY_APP": "roadmap_project.celery.app"},
    },
}
if TASK_BACKEND not in TASK_BACKENDS:
    raise ImproperlyConfigured(f"TASK_BACKEND must be one of {sorted(TASK_BACKENDS)}.")
if TASK_BACKEND == "celery" and not REDIS_URL:
    raise ImproperlyConfigured("TASK_BACKEND=celery needs REDIS_URL for the broker.")
TASKS = {"default": TASK_BACKENDS[TASK_BACKEND]}

CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
# No result backend on purpose: the database rows are the results, so the
# package's "get_result() will not work" warnings do not apply.
SILENCED_SYSTEM_CHECKS = ["django_tasks_celery.W001", "django_tasks_celery.W002"]
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
# Enqueueing happens on commit, before the 202 is sent: with the broker down, give
# up quickly and leave the item to its lease instead of holding the response.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_max": 0.5}
# The broker queue web processes send to and workers consume (one per deployment).
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_QUEUE", "generation")

# --- Generation -------------------------------------------------------------
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "")
GENERATION_PROVIDER = os.environ.get(
    "GENERATION_PROVIDER", "openai" if OPENAI_API_KEY else "offline"
)
OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL") or None
OPENAI_MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
# OpenAI-compatible providers tried in order (DESIGN §6); empty: the OPENAI_*
# variables above are a list of one. Validated by generation.checks.
GENERATION_PROVIDERS = json.loads(os.environ.get("GENERATION_PROVIDERS") or "[]")
# Failover: no first token in this long moves to the next provider; this many
# consecutive failures open a provider's circuit for GENERATION_CIRCUIT_SECONDS.
GENERATION_FIRST_TOKEN_SECONDS = float(os.environ.get("GENERATION_FIRST_TOKEN_SECONDS", "20"))
GENERATION_CIRCUIT_FAILURES = int(os.environ.get("GENERATION_CIRCUIT_FAILURES", "5"))
GENERATION_CIRCUIT_SECONDS = float(os.environ.get("GENERATION_CIRCUIT_SECONDS", "60"))
# Connecting and sending; waiting for bytes is bounded by GENERATION_STALL_SECONDS.
OPENAI_TIMEOUT_SECONDS = float(os.environ.get("OPENAI_TIMEOUT_SECONDS", "60"))
# Liveness is progress (DESIGN §6): a stream with no bytes for this long is a
# transient timeout, and no attempt runs longer than the deadline, across rounds.
GENERATION_STALL_SECONDS = float(os.environ.get("GENERATION_STALL_SECONDS", "30"))
GENERATION_DEADLINE_SECONDS = float(os.environ.get("GENERATION_DEADLINE_SECONDS", "300"))
OPENAI_MAX_RETRIES = int(os.environ.get("OPENAI_MAX_RETRIES", "2"))
# Provider calls in flight per process: they wait on the network, not the CPU
# (bench/in_flight: 500 at once cost ~20 ms of CPU each), so tens, not a few.
GENERATION_CONCURRENCY = int(os.environ.get("GENERATION_CONCURRENCY", "32"))
GENERATION_LEASE_SECONDS = float(os.environ.get("GENERATION_LEASE_SECONDS", "90"))
# The longest queued work may wait for a slot (in a process or the broker) before
# its pair counts as lost.
GENERATION_MAX_QUEUE_SECONDS = float(os.environ.get("GENERATION_MAX_QUEUE_SECONDS", "21600"))
# Re-asks after invalid structured output, and our own backoff rounds after the SDK's.
GENERATION_OUTPUT_ATTEMPTS = int(os.environ.get("GENERATION_OUTPUT_ATTEMPTS", "3"))
GENERATION_TRANSIENT_ATTEMPTS = int(os.environ.get("GENERATION_TRANSIENT_ATTEMPTS", "3"))
GENERATION_BACKOFF_SECONDS = float(os.environ.get("GENERATION_BACKOFF_SECONDS", "1.0"))
# How long the offline provider takes to write one answer (`make run` sets 8 s).
OFFLINE_PROVIDER_DELAY_SECONDS = float(os.environ.get("OFFLINE_PROVIDER_DELAY_SECONDS", "0.5"))
BATCH_MAX_PAIRS = int(os.environ.get("BATCH_MAX_PAIRS", "500"))
# Admission control: pairs one user may have queued or generating at once; a start
# that would pass it answers 429 and changes nothing.
GENERATION_MAX_ACTIVE_PER_USER = int(os.environ.get("GENERATION_MAX_ACTIVE_PER_USER", "1500"))
# Per million prompt and completion tokens, per model, in one currency (generation.usage):
# {"currency": "USD", "models": {"gpt-4o-mini": {"prompt": "0.15", "completion": "0.60"}}}
GENERATION_PRICES = json.loads(os.environ.get("GENERATION_PRICES") or "{}")
# Tokens one user may spend per UTC day, prompt and completion together (unset:
# unlimited; a user's own budget is set in the admin). A start reserves what its
# pairs can spend at most (generation.budgets) and answers 429 past the budget.
GENERATION_USER_DAILY_TOKENS = (
    int(os.environ["GENERATION_USER_DAILY_TOKENS"])
    if os.environ.get("GENERATION_USER_DAILY_TOKENS")
    else None
)
# The most tokens one answer may have (sent to the provider as max_completion_tokens).
GENERATION_MAX_OUTPUT_TOKENS = int(os.environ.get("GENERATION_MAX_OUTPUT_TOKENS", "4096"))
# The size of one roadmap, checked before anything else is validated (DESIGN §4):
# a 1 MB body holds 80,000 stages, which took minutes to create and seconds to read.
ROADMAP_MAX_CONCEPTS = int(os.environ.get("ROADMAP_MAX_CONCEPTS", "500"))
ROADMAP_MAX_STAGES = int(os.environ.get("ROADMAP_MAX_STAGES", "50"))
ROADMAP_MAX_MODULES = int(os.environ.get("ROADMAP_MAX_MODULES", "200"))
ROADMAP_MAX_NAME_LENGTH = 200
ROADMAP_MAX_DESCRIPTION_LENGTH = 2000
# How often a connected consumer re-reads the event store (DESIGN §5: at least every 2 s).
NOTIFICATIONS_CATCH_UP_SECONDS = float(os.environ.get("NOTIFICATIONS_CATCH_UP_SECONDS", "2.0"))
# How often each server process writes its count of open WebSocket connections to the
# database (notifications.socket_count), for GET /metrics on any process.
NOTIFICATIONS_CONNECTIONS_REPORT_SECONDS = float(
    os.environ.get("NOTIFICATIONS_CONNECTIONS_REPORT_SECONDS", "15")
)
# Where live content is kept while it is written (notifications.live): Redis when the
# channel layer is, so any server process can send a snapshot of a Celery worker's
# text; this process's memory otherwise.
NOTIFICATIONS_LIVE_REDIS_URL = REDIS_URL

# --- REST -------------------------------------------------------------------
RETRY_THROTTLE_RATE = os.environ.get("RETRY_THROTTLE_RATE", "30/minute")
# Failed logins (token endpoint, /login/, admin) per client address, and per username
# from any address (roadmap_project.logins).
AUTH_THROTTLE_RATE = os.environ.get("AUTH_THROTTLE_RATE", "10/minute")
AUTH_USERNAME_THROTTLE_RATE = os.environ.get("AUTH_USERNAME_THROTTLE_RATE", "100/hour")
for name, rate in (
    ("RETRY_THROTTLE_RATE", RETRY_THROTTLE_RATE),
    ("AUTH_THROTTLE_RATE", AUTH_THROTTLE_RATE),
    ("AUTH_USERNAME_THROTTLE_RATE", AUTH_USERNAME_THROTTLE_RATE),
):
    if not re.fullmatch(r"\d+/(s|sec|second|m|min|minute|h|hour|d|day)", rate):
        raise ImproperlyConfigured(f"{name} must look like 30/minute.")
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # DRF's JSON parser, answering 400 to JSON nested too deep to parse.
    "DEFAULT_PARSER_CLASSES": ["roadmap_project.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "roadmap_project.errors.exception_handler",
    "DEFAULT_METADATA_CLASS": "roadmap_project.metadata.DescriptionMetadata",
    # Client addresses for the login limits: REMOTE_ADDR, unless this many trusted
    # proxies append to X-Forwarded-For (a client could forge the header otherwise).
    "NUM_PROXIES": int(os.environ.get("NUM_PROXIES", "0")),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Roadmap content service",
    "DESCRIPTION": "AI learning roadmaps: generation lifecycle, retries and event streams.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The recursive shape of a 400 (roadmap_project.errors), referenced by name.
    "APPEND_COMPONENTS": {"schemas": VALIDATION_ERROR_COMPONENTS},
    # Swagger UI and Redoc from our own static files (drf-spectacular-sidecar,
    # pinned in requirements.txt): the docs work offline and never load a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # One schema name per choice set, whichever field uses it.
    "ENUM_NAME_OVERRIDES": {
        "ContentStatusEnum": "roadmaps.models.ContentStatus",
        "ContentTypeEnum": "roadmaps.models.ContentType",
        "TaskStatusEnum": "generation.models.TaskStatus",
        "TaskKindEnum": "generation.models.TaskKind",
        "ItemStateEnum": "generation.models.ItemState",
        "ThrottledCodeEnum": "roadmap_project.errors.THROTTLED_CODES",
    },
}
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

# GET /metrics answers a staff session, or `Authorization: Bearer <METRICS_TOKEN>` (a
# Prometheus scraper); unset, staff sessions only (roadmap_project.monitoring).
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")

# The reference web client's session login (roadmaps.pages).
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "roadmap-list"
LOGOUT_REDIRECT_URL = "login"

# --- I18N, static, media ----------------------------------------------------
LANGUAGE_CODE = os.environ.get("LANGUAGE_CODE", "en")
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
MEDIA_URL = "/media/"  # never routed: tutorials are served by the API to their owner
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
# Static files are served by the app (WhiteNoise, below); 0 only if the proxy serves /static/.
SERVE_FILES = env_bool("SERVE_FILES", True)
# Static files the production way (WhiteNoise): `collectstatic` writes them with a
# content hash in the name and compressed copies; they are served with a year's
# Cache-Control. `collectstatic` writes them so whatever DEBUG is, so `make run`
# prepares a later DEBUG=0 start. With DEBUG (as the process starts) pages name the
# plain files and WhiteNoise reads them from the apps (finders), reread on change:
# development and the test suite (pytest-django turns DEBUG off only later) need no
# collectstatic; tests/system/test_production_server.py runs the production path in a
# DEBUG=0 daphne.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "roadmap_project.staticfiles.DevelopmentStaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
if SERVE_FILES:
    MIDDLEWARE.insert(
        MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
        "roadmap_project.staticfiles.StaticFilesMiddleware",
    )

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
