from __future__ import annotations

from django.urls import path

from planning import views

app_name = "planning"
urlpatterns = [
    path("fleet/gpus/<int:pk>/", views.gpu_editor, name="gpu-editor"),
    path("fleet/nodes/<str:name>/", views.node_editor, name="node-editor"),
    path("plans/", views.plan_list, name="plan-list"),
    path("plans/new/", views.plan_compose, name="plan-compose"),
    path("plans/<int:pk>/", views.plan_detail, name="plan-detail"),
    path("plans/<int:pk>/apply/", views.plan_apply, name="plan-apply"),
    path("plans/<int:pk>/replan/", views.plan_replan, name="plan-replan"),
]
