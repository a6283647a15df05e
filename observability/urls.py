from __future__ import annotations

from django.urls import path

from observability import views

app_name = "observability"
urlpatterns = [
    path("overview/", views.overview, name="overview"),
]
