from __future__ import annotations

from django.urls import path

from partitions import views

app_name = "partitions"
urlpatterns = [
    path("fleet/", views.fleet, name="fleet"),
    path("operations/<int:pk>/", views.operation_detail, name="operation-detail"),
    path("operations/<int:pk>/retry-with-drain/", views.operation_retry_drain, name="operation-retry-drain"),
    path("operations/<int:pk>/restore/", views.operation_restore, name="operation-restore"),
]
