"""Settings refuse bad environment values at import, naming the variable.

Every case imports the settings module afresh in one subprocess (the settings modules read
os.environ at import, so they cannot be re-imported inside the test process), with the
environment stripped of the suite's own DJANGO_/AIM_/DATABASE_URL/REDIS_URL variables.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "DJANGO_SECRET_KEY": "x" * 20 + "production-secret-" + "y9Z" * 10,
    "DJANGO_ALLOWED_HOSTS": "console.example.com",
    "DATABASE_URL": "sqlite:////tmp/aim-settings-probe.sqlite3",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}
BASE = "aimconsole.settings.base"
PROD = "aimconsole.settings.production"

# (case id, settings module, environment, text the error must contain)
BAD: list[tuple[str, str, dict[str, str], str]] = [
    ("debug-maybe", BASE, {"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG='maybe'"),
    ("debug-maybe-local", "aimconsole.settings.local", {"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG='maybe'"),
    ("log-level", BASE, {"LOG_LEVEL": "LOUD"}, "LOG_LEVEL='LOUD'"),
    ("lease-negative", BASE, {"AIM_RECONFIGURATION_LEASE_S": "-5"}, "AIM_RECONFIGURATION_LEASE_S"),
    ("resend-zero", BASE, {"AIM_RECONFIGURATION_RESEND_AFTER_S": "0"}, "AIM_RECONFIGURATION_RESEND_AFTER_S"),
    ("read-retries-negative", BASE, {"AIM_RECONFIGURATION_READ_RETRIES": "-1"}, "AIM_RECONFIGURATION_READ_RETRIES"),
    ("backoff-negative", BASE, {"AIM_RECONFIGURATION_RETRY_BACKOFF_S": "-2"}, "AIM_RECONFIGURATION_RETRY_BACKOFF_S"),
    ("amd-smi-timeout-negative", BASE, {"AIM_AMD_SMI_TIMEOUT_S": "-1"}, "AIM_AMD_SMI_TIMEOUT_S"),
    ("reload-timeout-nan", BASE, {"AIM_AMD_SMI_RELOAD_TIMEOUT_S": "nan"}, "AIM_AMD_SMI_RELOAD_TIMEOUT_S"),
    ("heartbeat-zero", BASE, {"AIM_AGENT_HEARTBEAT_S": "0"}, "AIM_AGENT_HEARTBEAT_S"),
    ("sweep-negative", BASE, {"AIM_AGENT_SWEEP_S": "-1"}, "AIM_AGENT_SWEEP_S"),
    ("telemetry-inf", BASE, {"AIM_TELEMETRY_INTERVAL_S": "inf"}, "AIM_TELEMETRY_INTERVAL_S"),
    ("soft-limit-zero", BASE, {"CELERY_TASK_SOFT_TIME_LIMIT": "0"}, "CELERY_TASK_SOFT_TIME_LIMIT"),
    ("hard-limit-junk", BASE, {"CELERY_TASK_TIME_LIMIT": "30min"}, "CELERY_TASK_TIME_LIMIT='30min'"),
    ("soft-above-hard", BASE, {"CELERY_TASK_SOFT_TIME_LIMIT": "2000", "CELERY_TASK_TIME_LIMIT": "1800"},
     "CELERY_TASK_SOFT_TIME_LIMIT"),
    ("visibility-negative", BASE, {"CELERY_VISIBILITY_TIMEOUT": "-1"}, "CELERY_VISIBILITY_TIMEOUT"),
    ("failure-limit-zero", BASE, {"AIM_LOGIN_FAILURE_LIMIT": "0"}, "AIM_LOGIN_FAILURE_LIMIT"),
    ("cooloff-negative", BASE, {"AIM_LOGIN_COOLOFF_HOURS": "-1"}, "AIM_LOGIN_COOLOFF_HOURS"),
    ("body-limit-zero", BASE, {"AIM_MAX_BODY_BYTES": "0"}, "AIM_MAX_BODY_BYTES"),
    ("web-workers-zero", BASE, {"AIM_WEB_WORKERS": "0"}, "AIM_WEB_WORKERS='0'"),
    ("web-workers-word", BASE, {"AIM_WEB_WORKERS": "many"}, "AIM_WEB_WORKERS='many'"),
    ("overhead-nan", BASE, {"AIM_SIZING_OVERHEAD_FRACTION": "nan"}, "AIM_SIZING_OVERHEAD_FRACTION"),
    ("emulated-requests", BASE, {"AIM_METRICS_EMULATED_REQUESTS": "perhaps"}, "AIM_METRICS_EMULATED_REQUESTS"),
    ("metrics-cidrs", BASE, {"AIM_METRICS_ALLOWED_CIDRS": "10.0.0.0/8,not-a-network"}, "AIM_METRICS_ALLOWED_CIDRS"),
    ("trusted-proxies", BASE, {"AIM_TRUSTED_PROXIES": "10.0.0.300"}, "AIM_TRUSTED_PROXIES"),
    ("metrics-token-retired", BASE, {"AIM_METRICS_TOKEN": "s3cret"}, "create_token"),
    ("database-url", BASE, {"DATABASE_URL": "mysql://aim@db/aim"}, "DATABASE_URL"),
    ("database-url-hides-password", BASE, {"DATABASE_URL": "oracle://aim:hunter2@db/aim"}, "DATABASE_URL"),
    ("allowed-hosts-with-scheme", BASE, {"DJANGO_ALLOWED_HOSTS": "https://console.example.com"}, "DJANGO_ALLOWED_HOSTS"),
    ("csrf-origins-without-scheme", BASE, {"DJANGO_CSRF_TRUSTED_ORIGINS": "console.example.com"},
     "DJANGO_CSRF_TRUSTED_ORIGINS"),
    ("embedded-redis-port", BASE, {"AIM_EMBEDDED_REDIS_PORT": "70000"}, "AIM_EMBEDDED_REDIS_PORT"),
    ("hsts-negative", PROD, {**PRODUCTION, "DJANGO_HSTS_SECONDS": "-1"}, "DJANGO_HSTS_SECONDS"),
    ("ssl-redirect", PROD, {**PRODUCTION, "DJANGO_SECURE_SSL_REDIRECT": "sometimes"}, "DJANGO_SECURE_SSL_REDIRECT"),
    ("proxy-ssl-header", PROD, {**PRODUCTION, "DJANGO_SECURE_PROXY_SSL_HEADER": "y"}, "DJANGO_SECURE_PROXY_SSL_HEADER"),
]
GOOD: list[tuple[str, str, dict[str, str]]] = [
    ("defaults", BASE, {}),
    ("spelled-out-values", BASE, {"DJANGO_DEBUG": "Yes", "LOG_LEVEL": "warning", "AIM_TRUSTED_PROXIES": "10.0.0.1, 192.168.0.0/16",
                                  "AIM_METRICS_ALLOWED_CIDRS": "", "AIM_AGENT_HEARTBEAT_S": "2.5"}),
    ("production", PROD, dict(PRODUCTION)),
    ("local-defaults", "aimconsole.settings.local", {}),
    ("local-debug-asked-for", "aimconsole.settings.local", {"DJANGO_DEBUG": "1"}),
]

_PROBE = r"""
import importlib, json, os, sys
from django.core.exceptions import ImproperlyConfigured

cases = json.loads(sys.stdin.read())
clean = dict(os.environ)
results = {}
for case_id, module, env in cases:
    os.environ.clear()
    os.environ.update(clean)
    os.environ.update(env)
    for name in [m for m in sys.modules if m.startswith("aimconsole.settings")]:
        del sys.modules[name]
    try:
        settings = importlib.import_module(module)
        results[case_id] = {"ok": True, "LOG_LEVEL": settings.LOGGING["root"]["level"],
                            "METRICS_ALLOWED_CIDRS": settings.METRICS_ALLOWED_CIDRS,
                            "TRUSTED_PROXIES": settings.TRUSTED_PROXIES, "DEBUG": settings.DEBUG}
    except ImproperlyConfigured as exc:
        results[case_id] = {"ok": False, "error": str(exc)}
    except Exception as exc:  # anything else is a bug: the test shows it
        results[case_id] = {"ok": False, "error": f"not ImproperlyConfigured: {type(exc).__name__}: {exc}"}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DJANGO_", "AIM_", "CELERY_")) and k not in ("DATABASE_URL", "REDIS_URL", "LOG_LEVEL")}
    env["AIM_VAR_DIR"] = str(tmp_path_factory.mktemp("settings-var"))
    cases = [(case_id, module, case_env) for case_id, module, case_env, _ in BAD] + GOOD
    result = subprocess.run([sys.executable, "-c", _PROBE], input=json.dumps(cases), cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case_id, module, env, expected", BAD, ids=[case[0] for case in BAD])
def test_a_bad_value_stops_the_import_naming_the_variable(outcomes, case_id, module, env, expected):
    outcome = outcomes[case_id]
    assert not outcome["ok"], f"{env} was accepted"
    assert not outcome["error"].startswith("not ImproperlyConfigured"), outcome["error"]
    assert expected in outcome["error"]


def test_the_error_never_shows_a_database_password(outcomes):
    assert "hunter2" not in outcomes["database-url-hides-password"]["error"]


def test_good_values_are_accepted_and_normalised(outcomes):
    assert outcomes["defaults"]["ok"], outcomes["defaults"]
    spelled = outcomes["spelled-out-values"]
    assert spelled["ok"], spelled
    assert spelled["DEBUG"] is True and spelled["LOG_LEVEL"] == "WARNING"
    assert spelled["TRUSTED_PROXIES"] == ["10.0.0.1/32", "192.168.0.0/16"]
    assert spelled["METRICS_ALLOWED_CIDRS"] == []


def test_production_allows_no_metrics_network_by_default(outcomes):
    """Outside production a Prometheus on the same host may scrape without a token; in
    production only a metrics-scoped token or networks the admin lists explicitly."""
    assert outcomes["defaults"]["METRICS_ALLOWED_CIDRS"] == ["127.0.0.0/8", "::1/128"]
    assert outcomes["production"]["ok"], outcomes["production"]
    assert outcomes["production"]["METRICS_ALLOWED_CIDRS"] == []


def test_the_demo_settings_run_without_debug_unless_asked_for(outcomes):
    """``make demo`` (aimconsole.settings.local) must not show tracebacks and URL patterns."""
    assert outcomes["local-defaults"]["ok"] and outcomes["local-defaults"]["DEBUG"] is False
    assert outcomes["local-debug-asked-for"]["DEBUG"] is True
