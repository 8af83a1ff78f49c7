from django.urls import path
from items import views

urlpatterns = [
    path("", views.index),
    path("items", views.items),
    path("zone", views.zone),
    path("pool", views.pool_stats),
    path("metrics", views.metrics),
]
