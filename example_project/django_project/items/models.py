from django.db import models


class Item(models.Model):
    """The ``items`` table of ../schema.sql (created in every zone by run.py)."""

    name = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        managed = False  # the schema is shared with the FastAPI app: no migrations
        db_table = "items"
