"""The test suite of zonal."""
