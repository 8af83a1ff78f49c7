"""Settings of zonal_django's own tests (pytest-django and the ASGI/WSGI servers).

The database comes from ``DJTEST_DATABASE`` (JSON of one ``DATABASES`` entry), set
by the server tests; pytest-django tests fill it in from the lab in conftest.py.
"""

import json
import os

SECRET_KEY = "zonal-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "Europe/Paris"
INSTALLED_APPS = ["zonal_django", "djtestapp"]
MIDDLEWARE = ["zonal_django.middleware.ZonalRequestMiddleware"]
ROOT_URLCONF = "djtestapp.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
WSGI_APPLICATION = "djtestapp.wsgi.application"

_placeholder = {
    "ENGINE": "zonal_django.backends.postgresql",
    "NAME": "zonal",
    "USER": "zonal",
    "PASSWORD": "unset",
    "CONN_HEALTH_CHECKS": True,
    "OPTIONS": {"zonal": {"zones": {"a": "127.0.0.1:9"}, "pgbouncer": "transaction"}},
}
DATABASES = {"default": json.loads(os.environ.get("DJTEST_DATABASE", "null")) or _placeholder}
LOGGING = {"version": 1, "disable_existing_loggers": False}
