"""Admin: keys (secret shown once), routes, and the read-only request log."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from .keys import assign_secret, revoke_api_key
from .models import APIKey, ModelRoute, RequestLog


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "user", "created_at", "last_used_at", "expires_at", "status")
    list_filter = ("revoked_at", "expires_at", "user")
    search_fields = ("name", "prefix", "user__username")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    fields = ("user", "name", "prefix", "expires_at", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke_selected"]

    @admin.display(description="status")
    def status(self, obj: APIKey) -> str:
        if obj.revoked_at:
            return "revoked"
        if obj.expires_at and obj.expires_at <= timezone.now():
            return "expired"
        return "active"

    def save_model(self, request: HttpRequest, obj: APIKey, form: Any, change: bool) -> None:
        if not change:
            request._new_api_key_secret = assign_secret(obj)  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    def response_add(self, request: HttpRequest, obj: APIKey, post_url_continue: str | None = None) -> HttpResponse:
        """Show the new secret once, on a page of its own (never in a message cookie or a log)."""
        secret = getattr(request, "_new_api_key_secret", None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        context = {**self.admin_site.each_context(request), "key": obj, "secret": secret, "opts": self.opts}
        response = TemplateResponse(request, "admin/completions/apikey/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke selected keys")
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> None:
        count = 0
        for key in queryset.filter(revoked_at__isnull=True):
            revoke_api_key(key)
            count += 1
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)


@admin.register(ModelRoute)
class ModelRouteAdmin(admin.ModelAdmin):
    list_display = (
        "model_name", "provider", "upstream_model", "weight", "enabled",
        "input_price_per_million", "output_price_per_million", "api_key_env",
    )
    list_filter = ("provider", "enabled")
    search_fields = ("model_name", "upstream_model")
    list_editable = ("weight", "enabled")


@admin.register(RequestLog)
class RequestLogAdmin(admin.ModelAdmin):
    list_display = (
        "created_at", "request_id", "key_prefix", "user", "model", "provider", "stream",
        "status_code", "total_tokens", "cost", "latency_ms", "ttft_ms", "finish_reason", "client_disconnected",
    )
    list_filter = ("status_code", "stream", "provider", "model", "client_disconnected", "api_key", "user", "created_at")
    date_hierarchy = "created_at"
    search_fields = ("request_id",)
    list_select_related = ("user",)
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
