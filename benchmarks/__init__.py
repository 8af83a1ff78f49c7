"""Scenario code for ``zonal bench``."""
