from __future__ import annotations

from rest_framework.routers import DefaultRouter

from models.api.views import InferenceModelViewSet, ModelProfileViewSet, PrecisionViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.include_format_suffixes = False  # one URL per resource; JSON by Accept header
router.register("models", InferenceModelViewSet, basename="model")
router.register("profiles", ModelProfileViewSet, basename="profile")
router.register("precisions", PrecisionViewSet, basename="precision")

urlpatterns = router.urls
