from django.urls import path

from djtestapp import views

urlpatterns = [
    path("ping", views.ping),
    path("items", views.items),
    path("set-timeout", views.set_timeout),
    path("stream", views.stream),
    path("aping", views.aping),
    path("held", views.held),
]
