from __future__ import annotations

from django.urls import path

from partitions import views

app_name = "partitions"
urlpatterns = [
    path("", views.node_list, name="node-list"),
]
