"""/api/: the management API and its OpenAPI schema and docs."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from .views import KeyViewSet, LogViewSet, UsageView

router = DefaultRouter()
router.register("keys", KeyViewSet, basename="key")
router.register("logs", LogViewSet, basename="log")

urlpatterns = [
    path("usage/", UsageView.as_view(), name="usage"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("", include(router.urls)),
]
