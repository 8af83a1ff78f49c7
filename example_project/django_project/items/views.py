"""Views of the example: the ORM as usual; zonal does its work underneath."""

import json
from typing import Any

from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

import zonal_django
from zonal_core.metrics.prometheus import ZonalCollector

from .models import Item

_registries: dict[int, CollectorRegistry] = {}


def index(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"app": "zonal example (Django)",
                         "urls": ["/items", "POST /items?name=x", "/zone", "/pool", "/metrics"]})


@csrf_exempt
def items(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        item = Item.objects.create(name=request.GET.get("name") or "unnamed")
        return JsonResponse({"id": item.id, "name": item.name}, status=201)
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET", "POST"])
    rows = [{"id": i.id, "name": i.name, "created_at": i.created_at.isoformat()}
            for i in Item.objects.order_by("-id")[:20]]
    return HttpResponse(json.dumps(rows), content_type="application/json")


def zone(request: HttpRequest) -> JsonResponse:
    """Which server answered, and where new connections go now."""
    with connection.cursor() as cur:
        cur.execute("SELECT inet_server_port()")
        (port,) = cur.fetchone()
    stats = zonal_django.pool().stats()
    return JsonResponse({"server_port": port, "local_zone": stats.local_zone,
                         "preferred_zone": stats.preferred_zone})


def pool_stats(request: HttpRequest) -> JsonResponse:
    stats = zonal_django.pool().stats()
    zones: dict[str, Any] = {
        name: {"state": z.state, "open": z.open, "idle": z.idle, "in_use": z.in_use,
               "waiting": z.waiting, "failovers": z.failovers}
        for name, z in stats.zones.items()}
    return JsonResponse({"preferred_zone": stats.preferred_zone, "version": stats.version,
                         "zones": zones})


def metrics(request: HttpRequest) -> HttpResponse:
    pool = zonal_django.pool()
    registry = _registries.get(id(pool))
    if registry is None:  # one registry per pool (a new pool after a settings change)
        registry = _registries[id(pool)] = CollectorRegistry()
        ZonalCollector(pool, registry=registry)
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
