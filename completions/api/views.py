"""Management API: a user's own keys, usage and request log; staff see everyone's."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import usage
from ..keys import LIMIT_FIELDS, create_api_key, record_staff_limits, revoke_api_key
from ..models import APIKey, RequestLog
from .permissions import CreatesKeys
from .serializers import (
    APIKeySerializer,
    CreatedAPIKeySerializer,
    KeyQuerySerializer,
    LogQuerySerializer,
    RequestLogSerializer,
    StaffAPIKeySerializer,
    UsageQuerySerializer,
    UsageRowSerializer,
)
from .throttling import AnonymousFirst


def is_staff(request: Request) -> bool:
    return bool(request.user and request.user.is_staff)


def query(request: Request, serializer_class: type[serializers.Serializer]) -> dict[str, Any]:
    """The request's query parameters, validated: a bad value is a 400 naming the parameter."""
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


@extend_schema_view(list=extend_schema(parameters=[KeyQuerySerializer]))
class KeyViewSet(
    AnonymousFirst,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """List, create (secret shown once), rename and revoke API keys. Another user's key is a 404."""

    queryset = APIKey.objects.none()  # for the schema; get_queryset scopes the real one
    permission_classes = [IsAuthenticated, CreatesKeys]

    def get_queryset(self) -> QuerySet[APIKey]:
        qs = APIKey.objects.select_related("user").order_by("-created_at", "-id")
        if is_staff(self.request):
            user = query(self.request, KeyQuerySerializer).get("user")
            return qs.filter(user_id=user) if user is not None else qs
        return qs.filter(user=self.request.user)

    def get_serializer_class(self) -> type[serializers.Serializer]:
        return StaffAPIKeySerializer if is_staff(self.request) else APIKeySerializer

    @extend_schema(responses={201: CreatedAPIKeySerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        fields = dict(serializer.validated_data)
        owner = request.user
        user_id = fields.pop("user_id", None)
        if user_id is not None:
            owner = get_object_or_404(get_user_model(), pk=user_id)
        key, secret = create_api_key(owner, fields.pop("name"), by_staff=is_staff(request), **fields)
        body = CreatedAPIKeySerializer(key).data
        body["secret"] = secret
        return Response(body, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"})

    def perform_update(self, serializer: serializers.Serializer) -> None:
        key = serializer.save()
        if is_staff(self.request) and any(f in serializer.validated_data for f in LIMIT_FIELDS):
            record_staff_limits(key)

    @extend_schema(request=None, responses=APIKeySerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str | None = None) -> Response:
        key = self.get_object()
        revoke_api_key(key)
        return Response(self.get_serializer(key).data)


class LogPagination(CursorPagination):
    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


# Each query parameter and the lookup it filters on.
LOG_FILTERS = {
    "key": "api_key_id",
    "model": "model",
    "provider": "provider",
    "status": "status_code",
    "stream": "stream",
    "request_id": "request_id",
    "since": "created_at__gte",
    "until": "created_at__lt",
}


@extend_schema_view(list=extend_schema(parameters=[LogQuerySerializer]))
class LogViewSet(AnonymousFirst, viewsets.ReadOnlyModelViewSet):
    """The request log, newest first, with filters and cursor pagination."""

    serializer_class = RequestLogSerializer
    pagination_class = LogPagination
    queryset = RequestLog.objects.none()  # for the schema; get_queryset scopes the real one

    def get_queryset(self) -> QuerySet[RequestLog]:
        qs = RequestLog.objects.all()
        q = query(self.request, LogQuerySerializer)
        if is_staff(self.request):
            if q.get("user") is not None:
                qs = qs.filter(user_id=q["user"])
        else:
            qs = qs.filter(user=self.request.user)
        return qs.filter(**{lookup: q[param] for param, lookup in LOG_FILTERS.items() if q.get(param) is not None})


class UsageView(AnonymousFirst, APIView):
    """Usage from the daily roll-ups: by day, key or model, or one total."""

    @extend_schema(parameters=[UsageQuerySerializer], responses=UsageRowSerializer(many=True))
    def get(self, request: Request) -> Response:
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        q = query.validated_data
        end = q.get("end") or timezone.now().date()
        start = q.get("start") or (end - timedelta(days=29) if end > date.min + timedelta(days=29) else date.min)
        user_id = q.get("user") if is_staff(request) else request.user.pk
        if q.get("key") is not None and not is_staff(request):
            get_object_or_404(APIKey, pk=q["key"], user=request.user)
        scope = usage.Scope(user_id=user_id, key_id=q.get("key"), model=q.get("model"))
        group = q["group_by"]
        if group == "total":
            rows = [usage.usage_total(start, end, scope)]
        else:
            rows = usage.usage_rows(start, end, scope, ({"key": "key_id"}.get(group, group),))
        return Response(
            {"start": start, "end": end, "group_by": group, "data": UsageRowSerializer(rows, many=True).data}
        )
