from __future__ import annotations

from django.urls import path

from models import views

app_name = "catalog"
urlpatterns = [
    path("", views.model_list, name="model-list"),
    path("<int:pk>/", views.model_detail, name="model-detail"),
]
