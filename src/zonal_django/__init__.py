"""zonal for Django: ``ENGINE = "zonal_django.backends.postgresql"``."""
