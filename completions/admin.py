"""Admin: keys (secret shown once, limits, this month's usage), routes, user limits,
the read-only request log (filters, CSV export) and the daily roll-ups."""

from __future__ import annotations

import csv
from decimal import Decimal
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.template import engines
from django.template.response import TemplateResponse
from django.urls import path

from .keys import LIMIT_FIELDS, assign_secret, assign_token_secret, limit_values, revoke_api_key
from .models import NANOS, APIKey, ManagementToken, ModelRoute, RequestLog, SetAsideLogRow, UsageDaily, UserLimits
from .usage import month_start

LIMIT_FIELDSET = (
    "Limits (blank: inherit the user's defaults)",
    {"fields": ("allowed_models", ("rpm_limit", "tpm_limit"), ("token_budget", "spend_budget", "budget_period"))},
)


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "prefix",
        "user",
        "status",
        "month_requests",
        "month_tokens",
        "month_cost",
        "rpm_limit",
        "tpm_limit",
        "spend_budget",
        "last_used_at",
        "expires_at",
    )
    list_filter = ("revoked_at", "expires_at", "user")
    search_fields = ("name", "prefix", "user__username")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    fieldsets = (
        (None, {"fields": ("user", "name", "prefix", "expires_at", "created_at", "last_used_at", "revoked_at")}),
        LIMIT_FIELDSET,
    )
    list_select_related = ("user",)
    actions = ["revoke_selected"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[APIKey]:
        """Each key with this month's usage from the roll-ups (subqueries, no log scan)."""
        month = UsageDaily.objects.filter(key_id=OuterRef("pk"), day__gte=month_start()).values("key_id")

        def total(field: str) -> Any:
            return Coalesce(Subquery(month.annotate(s=Sum(field)).values("s")[:1]), 0)

        return (
            super()
            .get_queryset(request)
            .annotate(
                month_requests=total("requests"),
                month_tokens=total("total_tokens"),
                month_cost_nanos=total("cost_nanos"),
            )
        )

    @admin.display(description="requests this month", ordering="month_requests")
    def month_requests(self, obj: APIKey) -> int:
        return getattr(obj, "month_requests", 0)

    @admin.display(description="tokens this month", ordering="month_tokens")
    def month_tokens(self, obj: APIKey) -> int:
        return getattr(obj, "month_tokens", 0)

    @admin.display(description="cost this month (USD)", ordering="month_cost_nanos")
    def month_cost(self, obj: APIKey) -> str:
        return f"{Decimal(getattr(obj, 'month_cost_nanos', 0)) / NANOS:.4f}"

    @admin.display(description="status")
    def status(self, obj: APIKey) -> str:
        return obj.status

    def save_model(self, request: HttpRequest, obj: APIKey, form: Any, change: bool) -> None:
        if not change:
            request._new_api_key_secret = assign_secret(obj)
        if any(f in form.changed_data for f in LIMIT_FIELDS):
            obj.staff_limits = limit_values(obj)  # staff set these: the user's new keys are held to them
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


# The page showing a new management token, the only time it is shown.
TOKEN_CREATED = """{% extends "admin/base_site.html" %}
{% block title %}Management API token created{% endblock %}
{% block content %}
<h1>Management API token “{{ token.name|default:"token" }}” created for {{ token.user }}</h1>
<p><strong>Copy this token now. It is stored only as a hash and will not be shown again.</strong></p>
<p>Send it as <code>Authorization: Token &lt;token&gt;</code> to <code>/api/</code>.</p>
<p><input id="new-token" type="text" readonly size="70" value="{{ secret }}" onclick="this.select()"></p>
<p><a href="{% url 'admin:completions_managementtoken_changelist' %}">Back to management API tokens</a></p>
{% endblock %}"""


@admin.register(ManagementToken)
class ManagementTokenAdmin(admin.ModelAdmin):
    """Tokens for the management API: created here (shown once), listed by prefix, deleted to revoke."""

    list_display = ("name", "prefix", "user", "created_at", "last_used_at")
    list_filter = ("user",)
    search_fields = ("name", "prefix", "user__username")
    list_select_related = ("user",)
    fields = ("user", "name", "prefix", "created_at", "last_used_at")
    readonly_fields = ("prefix", "created_at", "last_used_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # A token's owner is fixed: moving it would hand one user's credential to another.
        return (*self.readonly_fields, "user") if obj is not None else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: ManagementToken, form: Any, change: bool) -> None:
        if not change:
            request._new_token_secret = assign_token_secret(obj)
        super().save_model(request, obj, form, change)

    def response_add(
        self, request: HttpRequest, obj: ManagementToken, post_url_continue: str | None = None
    ) -> HttpResponse:
        """Show the new token once, on a page of its own (never in a message cookie or a log)."""
        secret = getattr(request, "_new_token_secret", None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        context = {**self.admin_site.each_context(request), "token": obj, "secret": secret, "opts": self.opts}
        page = engines["django"].from_string(TOKEN_CREATED).render(context, request)
        response = HttpResponse(page)
        response["Cache-Control"] = "no-store"
        return response


@admin.register(ModelRoute)
class ModelRouteAdmin(admin.ModelAdmin):
    list_display = (
        "model_name",
        "provider",
        "upstream_model",
        "weight",
        "enabled",
        "input_price_per_million",
        "output_price_per_million",
        "api_key_env",
    )
    list_filter = ("provider", "enabled")
    search_fields = ("model_name", "upstream_model")
    list_editable = ("weight", "enabled")


CSV_FIELDS = (
    "created_at",
    "request_id",
    "endpoint",
    "key_prefix",
    "api_key_id",
    "user_id",
    "model",
    "provider",
    "upstream_model",
    "stream",
    "status_code",
    "error_type",
    "error_code",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "usage_estimated",
    "cost",
    "latency_ms",
    "ttft_ms",
    "finish_reason",
    "client_disconnected",
    "end_user",
)


# A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A value safe to open in a spreadsheet: text that would start a formula gets a leading `'`.

    The log holds what tenants sent (`user`, model names, request ids), and staff open the export
    in spreadsheets; numbers, dates and booleans are left as they are.
    """
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


class _Echo:
    """A file-like object whose write() returns what it was given (for streaming CSV)."""

    def write(self, value: str) -> str:
        return value


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the gateway writes itself: staff may look, nobody may add, edit or delete."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(RequestLog)
class RequestLogAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "request_id",
        "key_prefix",
        "user",
        "model",
        "provider",
        "stream",
        "status_code",
        "total_tokens",
        "cost",
        "latency_ms",
        "ttft_ms",
        "finish_reason",
        "client_disconnected",
    )
    list_filter = ("status_code", "stream", "provider", "model", "client_disconnected", "api_key", "user", "created_at")
    date_hierarchy = "created_at"
    search_fields = ("request_id",)
    list_select_related = ("user",)
    show_full_result_count = False

    def get_urls(self) -> list[Any]:
        extra = [path("export/", self.admin_site.admin_view(self.export_csv), name="completions_requestlog_export")]
        return extra + super().get_urls()

    def export_csv(self, request: HttpRequest) -> StreamingHttpResponse:
        """The rows the change list shows with the current filters and search, as CSV (streamed)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        queryset = self.get_changelist_instance(request).get_queryset(request)
        writer = csv.writer(_Echo())

        def rows() -> Any:
            yield writer.writerow(CSV_FIELDS)
            for values in queryset.values_list(*CSV_FIELDS).iterator(chunk_size=2000):
                yield writer.writerow([csv_cell(v) for v in values])

        response = StreamingHttpResponse(rows(), content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="request-log.csv"'
        return response


@admin.register(SetAsideLogRow)
class SetAsideLogRowAdmin(ReadOnlyAdmin):
    """Log rows the database refused, kept so the rest of their batch could be written."""

    list_display = ("created_at", "request_id", "error")
    search_fields = ("request_id",)
    date_hierarchy = "created_at"

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)  # once looked into, they may be cleared


@admin.register(UsageDaily)
class UsageDailyAdmin(ReadOnlyAdmin):
    """The daily roll-ups (maintained as log rows are written)."""

    list_display = ("day", "key_id", "user_id", "model", "requests", "errors", "total_tokens", "cost")
    list_filter = ("model",)
    date_hierarchy = "day"


class UserLimitsInline(admin.StackedInline):
    model = UserLimits
    can_delete = True
    verbose_name_plural = "Limits for this user (all of their keys together)"
    fields = LIMIT_FIELDSET[1]["fields"]


User = get_user_model()
if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class GatewayUserAdmin(UserAdmin):
    inlines = [*UserAdmin.inlines, UserLimitsInline]
