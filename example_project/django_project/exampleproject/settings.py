"""Settings of the example Django project on zonal.

The database is the zonal backend; the zones and pool options come from the
topology file shared with the FastAPI app (``ZONAL_TOPOLOGY_FILE``), the
credentials from ``DATABASE_URL`` (``postgresql://user:password@/dbname``, no host).
"""

import os
from urllib.parse import unquote, urlsplit

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
ROOT_URLCONF = "exampleproject.urls"
ASGI_APPLICATION = "exampleproject.asgi.application"
WSGI_APPLICATION = "exampleproject.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "zonal_django",  # system checks; manage.py zonal_status, zonal_doctor
    "items",
]
MIDDLEWARE = [
    "zonal_django.middleware.ZonalRequestMiddleware",  # connections back at request end
]

_db = urlsplit(os.environ["DATABASE_URL"])
DATABASES = {
    "default": {
        "ENGINE": "zonal_django.backends.postgresql",
        "NAME": _db.path.lstrip("/"),
        "USER": unquote(_db.username or ""),
        "PASSWORD": unquote(_db.password or ""),
        "CONN_HEALTH_CHECKS": True,  # -> pre_ping
        # zones, local_zone, pool_size, timeouts...: from ZONAL_TOPOLOGY_FILE
        "OPTIONS": {"zonal": {}},
    }
}
