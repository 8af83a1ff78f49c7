"""zonal's Django backend: ``ENGINE = "zonal_django.backends.postgresql"``."""
