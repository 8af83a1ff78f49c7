"""A tiny Django app for zonal_django's tests."""
