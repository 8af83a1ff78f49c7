"""Views the tests call through the test client and real servers."""

import json

from asgiref.sync import sync_to_async
from django.db import connection, transaction
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse

from djtestapp.models import Item
from zonal_core.errors import SessionStateError


def _where() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT inet_server_port(), current_database()")
        port, db = cursor.fetchone()
    return {"port": port, "db": db}


def ping(request):
    return JsonResponse(_where())


def items(request):
    # Committed work: the path that breaks with prepared statements behind PgBouncer.
    with transaction.atomic():
        Item.objects.create(name="x", n=1)
        count = Item.objects.filter(name="x").count()
    return JsonResponse({"count": count, **_where()})


def set_timeout(request):
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = '5s'")
    except SessionStateError as exc:
        return JsonResponse({"refused": str(exc), "safe_form": exc.safe_form}, status=400)
    return JsonResponse({"refused": None})


def stream(request):
    def chunks():
        for _ in range(3):
            yield json.dumps(_where()) + "\n"

    return StreamingHttpResponse(chunks(), content_type="text/plain")


async def aping(request):
    data = await sync_to_async(_where)()
    count = await Item.objects.acount()
    return JsonResponse({**data, "count": count})


def held(request):
    return HttpResponse(str(connection.connection is not None))
