from __future__ import annotations

from django.urls import path

from serving import views

app_name = "serving"
urlpatterns = [
    path("operations/", views.operation_list, name="operation-list"),
    path("deployments/", views.deployment_list, name="deployment-list"),
    path("deployments/new/", views.deployment_create, name="deployment-create"),
    path("deployments/<int:pk>/", views.deployment_detail, name="deployment-detail"),
    path("deployments/<int:pk>/stop/", views.deployment_stop, name="deployment-stop"),
    path("deployments/<int:pk>/redeploy/", views.deployment_redeploy, name="deployment-redeploy"),
]
