"""Management API representations."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from rest_framework import serializers

from ..keys import LIMIT_FIELDS, new_key_limits, refused_changes
from ..models import APIKey, RequestLog


class APIKeySerializer(serializers.ModelSerializer):
    """A key as its owner sees it: never the secret (only `prefix`), except once at creation.

    A non-staff owner may set limits and expiry, but only tighter than what the key has (or, for
    a new key, than the ceiling staff gave the user): see `keys.new_key_limits`/`refused_changes`.
    """

    status = serializers.CharField(read_only=True)
    user = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = APIKey
        fields: tuple[str, ...] = (
            "id",
            "name",
            "prefix",
            "user",
            "status",
            "created_at",
            "last_used_at",
            "expires_at",
            "revoked_at",
            *LIMIT_FIELDS,
        )
        read_only_fields = ("id", "prefix", "user", "status", "created_at", "last_used_at", "revoked_at")

    def validate_allowed_models(self, value: Any) -> Any:
        if value is not None and (not isinstance(value, list) or not all(isinstance(m, str) for m in value)):
            raise serializers.ValidationError("Must be a list of model ids.")
        return value

    def validate_expires_at(self, value: Any) -> Any:
        if self.instance is None and value is not None and value <= timezone.now():
            raise serializers.ValidationError("Must be in the future.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if self.instance is None:
            limits, errors = new_key_limits(self.context["request"].user, attrs)
            if errors:
                raise serializers.ValidationError(errors)
            return {**attrs, **limits}
        errors = refused_changes(self.instance, attrs)
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class StaffAPIKeySerializer(APIKeySerializer):
    """Staff may set any limit and expiry, and create keys for any user."""

    user_id = serializers.IntegerField(write_only=True, required=False)

    class Meta(APIKeySerializer.Meta):
        fields = (*APIKeySerializer.Meta.fields, "user_id")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return attrs


class CreatedAPIKeySerializer(APIKeySerializer):
    """The answer to a creation: the only time the secret is shown."""

    secret = serializers.CharField(read_only=True, help_text="The full key. Shown once; store it now.")

    class Meta(APIKeySerializer.Meta):
        fields = (*APIKeySerializer.Meta.fields, "secret")


class RequestLogSerializer(serializers.ModelSerializer):
    class Meta:
        model = RequestLog
        fields = (
            "id",
            "created_at",
            "request_id",
            "endpoint",
            "api_key",
            "key_prefix",
            "model",
            "provider",
            "upstream_model",
            "stream",
            "status_code",
            "error_type",
            "error_code",
            "error_message",
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "usage_estimated",
            "cost",
            "latency_ms",
            "ttft_ms",
            "finish_reason",
            "client_disconnected",
            "attempts",
            "end_user",
            "metadata",
        )


class UsageRowSerializer(serializers.Serializer):
    day = serializers.DateField(required=False)
    key_id = serializers.IntegerField(required=False)
    model = serializers.CharField(required=False)
    requests = serializers.IntegerField()
    errors = serializers.IntegerField()
    error_rate = serializers.FloatField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    cost = serializers.DecimalField(max_digits=20, decimal_places=9)
    avg_latency_ms = serializers.FloatField()


# Ids are 64-bit integers in the database: a larger number is a 400 here, not an overflow there.
MAX_ID = 2**63 - 1


def id_field(help_text: str = "") -> serializers.IntegerField:
    return serializers.IntegerField(required=False, min_value=0, max_value=MAX_ID, help_text=help_text)


class KeyQuerySerializer(serializers.Serializer):
    """Query parameters of /api/keys/."""

    user = id_field("Staff only: one user's keys.")


class UsageQuerySerializer(serializers.Serializer):
    """Query parameters of /api/usage/."""

    start = serializers.DateField(required=False, help_text="First day (UTC), default 30 days ago.")
    end = serializers.DateField(required=False, help_text="Last day (UTC), default today.")
    group_by = serializers.ChoiceField(choices=["day", "key", "model", "total"], default="day")
    key = id_field()
    model = serializers.CharField(required=False, max_length=200)
    user = id_field("Staff only: one user's usage.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("start") and attrs.get("end") and attrs["start"] > attrs["end"]:
            raise serializers.ValidationError({"start": "must not be after end"})
        return attrs


class LogQuerySerializer(serializers.Serializer):
    """Query parameters of /api/logs/: every one optional, every one checked (a bad value is a 400 naming it)."""

    key = id_field("One key's rows.")
    model = serializers.CharField(required=False, max_length=200, help_text="The model the client asked for.")
    provider = serializers.CharField(required=False, max_length=20)
    status = serializers.IntegerField(required=False, min_value=100, max_value=599, help_text="HTTP status.")
    # default=None: a boolean missing from a query string is "no filter", not False.
    stream = serializers.BooleanField(required=False, allow_null=True, default=None)
    request_id = serializers.CharField(required=False, max_length=128)
    since = serializers.DateTimeField(required=False, help_text="ISO date or datetime (UTC unless an offset is given).")
    until = serializers.DateTimeField(required=False, help_text="ISO date or datetime, exclusive.")
    user = id_field("Staff only: one user's rows.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("since") and attrs.get("until") and attrs["since"] > attrs["until"]:
            raise serializers.ValidationError({"since": "must not be after until"})
        return attrs
