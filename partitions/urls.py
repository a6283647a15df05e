from __future__ import annotations

from django.urls import path

from partitions import views

app_name = "partitions"
urlpatterns = [
    path("fleet/", views.fleet, name="fleet"),
    path("fleet/cards/", views.fleet_page_cards, name="fleet-page-cards"),
    path("fleet/node/<str:name>/card/", views.fleet_node_card, name="fleet-node-card"),
    path("fleet/gpu/<str:name>/<int:index>/card/", views.fleet_gpu_card, name="fleet-gpu-card"),
    path("operations/<int:pk>/", views.operation_detail, name="operation-detail"),
    path("operations/<int:pk>/retry-with-drain/", views.operation_retry_drain, name="operation-retry-drain"),
    path("operations/<int:pk>/restore/", views.operation_restore, name="operation-restore"),
]
