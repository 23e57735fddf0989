"""Root URLs: the gateway endpoints, the management API and the admin."""

from django.contrib import admin
from django.urls import include, path

from completions.dashboard import dashboard_view
from completions.views import healthz, metrics_view, readyz

urlpatterns = [
    path("admin/usage/", admin.site.admin_view(dashboard_view), name="usage-dashboard"),
    path("admin/", admin.site.urls),
    path("api/", include("completions.api.urls")),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("", include("completions.urls")),
]

handler400 = "completions.errors.bad_request"
handler403 = "completions.errors.permission_denied"
handler404 = "completions.errors.not_found"
handler500 = "completions.errors.server_error"
