"""Root URLs: the gateway endpoints, the management API and the admin."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("completions.urls")),
]

handler400 = "completions.views.bad_request"
handler403 = "completions.views.permission_denied"
handler404 = "completions.views.not_found"
handler500 = "completions.views.server_error"
