"""The admin usage dashboard: per-day requests, tokens, cost and error rate, top keys and models,
latency percentiles. Everything is read from the daily roll-ups, never from the request log, so
the page costs the same with a thousand log rows or a hundred million.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.dateparse import parse_date

from . import usage
from .models import APIKey

RANGES = {"7": "7 days", "30": "30 days", "90": "90 days", "365": "365 days"}


def chosen_range(request: HttpRequest, today: date | None = None) -> tuple[date, date]:
    """The range from ?start=&end= (dates) or ?days=N; 30 days by default."""
    today = today or timezone.now().date()
    start, end = parse_date(request.GET.get("start") or ""), parse_date(request.GET.get("end") or "")
    if start and end and start <= end:
        return start, end
    days = int(request.GET["days"]) if request.GET.get("days", "").isdigit() else 30
    return today - timedelta(days=max(1, min(days, 3660)) - 1), today


def dashboard_data(start: date, end: date) -> dict[str, Any]:
    """Everything the page draws, as plain JSON-able values."""
    by_day = {row["day"]: row for row in usage.usage_rows(start, end, group_by=("day",))}
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    empty = {
        "requests": 0,
        "errors": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "cost": 0,
        "error_rate": 0.0,
    }
    series = [by_day.get(d, empty) for d in days]
    top_keys = usage.top(start, end, "key_id")
    names = {
        k.pk: f"{k.name} ({k.prefix}…, {k.user.username})"
        for k in APIKey.objects.filter(pk__in=[r["key_id"] for r in top_keys]).select_related("user")
    }
    totals = usage.usage_total(start, end)
    return {
        "days": [d.isoformat() for d in days],
        "requests": [row["requests"] for row in series],
        "errors": [row["errors"] for row in series],
        "error_rate": [round(row["error_rate"] * 100, 2) for row in series],
        "prompt_tokens": [row["prompt_tokens"] for row in series],
        "completion_tokens": [row["completion_tokens"] for row in series],
        "cost": [float(row["cost"]) for row in series],
        "top_keys": [
            {
                "label": names.get(
                    r["key_id"], "no key (rejected)" if r["key_id"] == 0 else f"deleted key #{r['key_id']}"
                ),
                "requests": r["requests"],
                "total_tokens": r["total_tokens"],
                "cost": float(r["cost"]),
            }
            for r in top_keys
        ],
        "top_models": [
            {
                "label": r["model"] or "(none)",
                "requests": r["requests"],
                "total_tokens": r["total_tokens"],
                "cost": float(r["cost"]),
            }
            for r in usage.top(start, end, "model")
        ],
        "latency": usage.latency_percentiles(start, end),
        "totals": {
            "requests": totals["requests"],
            "errors": totals["errors"],
            "error_rate": round(totals["error_rate"] * 100, 2),
            "total_tokens": totals["total_tokens"],
            "cost": float(totals["cost"]),
        },
    }


def dashboard_view(request: HttpRequest) -> HttpResponse:
    """GET /admin/usage/ (staff only)."""
    start, end = chosen_range(request)
    context = {
        **admin.site.each_context(request),
        "title": "Usage dashboard",
        "start": start,
        "end": end,
        "ranges": RANGES,
        "data": dashboard_data(start, end),
    }
    return TemplateResponse(request, "admin/completions/dashboard.html", context)
