from __future__ import annotations

from django.urls import path

from partitions import views

app_name = "partitions"
urlpatterns = [
    path("fleet/", views.fleet, name="fleet"),
    path("fleet/gpus/<int:pk>/", views.gpu_editor, name="gpu-editor"),
    path("fleet/nodes/<str:name>/", views.node_editor, name="node-editor"),
    path("plans/<int:pk>/", views.plan_detail, name="plan-detail"),
    path("plans/<int:pk>/apply/", views.plan_apply, name="plan-apply"),
    path("operations/", views.operation_list, name="operation-list"),
    path("operations/<int:pk>/", views.operation_detail, name="operation-detail"),
    path("deployments/", views.deployment_list, name="deployment-list"),
    path("deployments/new/", views.deployment_create, name="deployment-create"),
    path("deployments/<int:pk>/", views.deployment_detail, name="deployment-detail"),
    path("deployments/<int:pk>/stop/", views.deployment_stop, name="deployment-stop"),
]
