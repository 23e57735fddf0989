"""/api/: the management API and its OpenAPI schema and docs."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import APIRootView, DefaultRouter

from .throttling import AnonymousFirst
from .views import KeyViewSet, LogViewSet, UsageView


# Every view under /api/ meets the anonymous rate before it answers an anonymous caller.
class RootView(AnonymousFirst, APIRootView):
    pass


class SchemaView(AnonymousFirst, SpectacularAPIView):
    pass


class DocsView(AnonymousFirst, SpectacularSwaggerView):
    pass


router = DefaultRouter()
router.APIRootView = RootView
router.register("keys", KeyViewSet, basename="key")
router.register("logs", LogViewSet, basename="log")

urlpatterns = [
    path("usage/", UsageView.as_view(), name="usage"),
    path("schema/", SchemaView.as_view(), name="schema"),
    path("docs/", DocsView.as_view(url_name="schema"), name="docs"),
    path("", include(router.urls)),
]
