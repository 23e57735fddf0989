"""Data: API keys, the routing table, the request log."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.utils import timezone

NANOS = Decimal(1_000_000_000)  # cost units per USD


class BudgetPeriod(models.TextChoices):
    MONTH = "month", "Calendar month (UTC)"
    TOTAL = "total", "Total (never resets)"


class LimitFields(models.Model):
    """Limits a key or a user can have; empty means no limit of that kind."""

    allowed_models = models.JSONField(
        null=True, blank=True, help_text="Public model ids this may use; empty list or blank = all."
    )
    rpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Requests per minute.")
    tpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Tokens per minute.")
    token_budget = models.PositiveBigIntegerField(null=True, blank=True, help_text="Tokens per budget period.")
    spend_budget = models.DecimalField(
        max_digits=12, decimal_places=4, null=True, blank=True, help_text="USD per budget period."
    )
    budget_period = models.CharField(max_length=10, choices=BudgetPeriod.choices, blank=True)

    class Meta:
        abstract = True


class UserLimits(LimitFields):
    """A user's limits, set by staff: they hold for all of the user's keys together."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="gateway_limits")

    class Meta:
        verbose_name = "user limits"
        verbose_name_plural = "user limits"

    def __str__(self) -> str:
        return f"limits of {self.user}"


class APIKey(LimitFields):
    """A caller's credential. Only a SHA-256 hash and a short visible prefix are stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, db_index=True, editable=False, help_text="First characters, for humans.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    staff_limits = models.JSONField(
        null=True,
        blank=True,
        editable=False,
        help_text="The limits staff last set on this key; keys its user creates are held to them too.",
    )

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def status(self) -> str:
        """active, expired or revoked."""
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= timezone.now():
            return "expired"
        return "active"


class ManagementToken(models.Model):
    """A credential for the management API (`Authorization: Token …`).

    Like API keys, only a SHA-256 hash and the first characters are stored: the token itself
    is shown once, when created, and never again.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="management_tokens")
    name = models.CharField(max_length=100, blank=True, help_text="What the token is for.")
    prefix = models.CharField(max_length=16, editable=False, help_text="First characters, for humans.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "management API token"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name or 'token'} ({self.prefix}…, {self.user})"


class Provider(models.TextChoices):
    MOCK = "mock", "Mock (offline)"
    GEMINI = "gemini", "Google Gemini"
    ANTHROPIC = "anthropic", "Anthropic"
    OPENAI = "openai", "OpenAI-compatible"


class ModelRoute(models.Model):
    """One way to serve a public model id. Credentials live in the environment, never here."""

    model_name = models.CharField(max_length=200, db_index=True, help_text="Public model id clients send.")
    aliases = models.JSONField(default=list, blank=True, help_text="Other public ids served by this route.")
    provider = models.CharField(max_length=20, choices=Provider.choices)
    upstream_model = models.CharField(max_length=200, blank=True, help_text="Model name sent upstream.")
    base_url = models.CharField(max_length=500, blank=True)
    api_key_env = models.CharField(
        max_length=100, blank=True, help_text="Name of the environment variable holding the credential."
    )
    weight = models.PositiveIntegerField(default=1)
    connect_timeout = models.FloatField(default=5.0, help_text="Seconds to connect.")
    first_byte_timeout = models.FloatField(default=60.0, help_text="Seconds until the first byte/chunk.")
    idle_timeout = models.FloatField(default=30.0, help_text="Seconds allowed between two stream chunks.")
    max_retries = models.PositiveSmallIntegerField(default=1)
    fallbacks = models.JSONField(default=list, blank=True, help_text="Public model ids to try if this one fails.")
    input_price_per_million = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    output_price_per_million = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    options = models.JSONField(default=dict, blank=True, help_text="Provider-specific settings.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model_name", "id"]

    def __str__(self) -> str:
        return f"{self.model_name} → {self.provider}:{self.upstream_model or self.model_name}"


class RouteTableVersion(models.Model):
    """One row: bumped after every committed change to the routes; each worker polls it."""

    version = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"route table version {self.version}"


class RequestLog(models.Model):
    """One row per API request, success or failure. Text is kept only if GATEWAY_LOG_CONTENT is on."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    request_id = models.CharField(max_length=128, db_index=True)
    endpoint = models.CharField(max_length=32, default="chat.completions")
    api_key = models.ForeignKey(APIKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    key_prefix = models.CharField(max_length=16, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    model = models.CharField(max_length=200, blank=True, help_text="Model the client asked for.")
    provider = models.CharField(max_length=20, blank=True)
    upstream_model = models.CharField(max_length=200, blank=True)
    route_id = models.IntegerField(null=True, blank=True)
    stream = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField()
    error_type = models.CharField(max_length=64, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(
        default=False, help_text="The upstream reported no usage (e.g. a stream cut short); counted by the gateway."
    )
    cost = models.DecimalField(max_digits=18, decimal_places=9, default=Decimal("0"), help_text="USD.")
    latency_ms = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Time to first chunk (streams).")
    finish_reason = models.CharField(max_length=32, blank=True)
    client_disconnected = models.BooleanField(default=False)
    attempts = models.JSONField(default=list, blank=True, help_text="Every upstream attempt, in order.")
    end_user = models.CharField(max_length=256, blank=True, help_text="`user` / `safety_identifier` sent.")
    metadata = models.JSONField(null=True, blank=True)
    request_body = models.JSONField(null=True, blank=True)
    response_text = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["api_key", "created_at"]),
            models.Index(fields=["user", "created_at"]),
            models.Index(fields=["model", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.model} {self.status_code}"


class SetAsideLogRow(models.Model):
    """A request-log row the database refused; kept here (as JSON text) so the rest of its batch is written."""

    created_at = models.DateTimeField(default=timezone.now)
    request_id = models.CharField(max_length=128, db_index=True)
    error = models.TextField(help_text="What the database said.")
    values = models.TextField(help_text="The row's values as JSON (NUL characters escaped).")

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "set-aside log row"

    def __str__(self) -> str:
        return f"{self.request_id} ({self.created_at:%Y-%m-%d %H:%M})"


class UsageDaily(models.Model):
    """Per day, key and model: the sums of the request log, maintained as rows are written.

    `key_id`/`user_id` are plain integers (0 = none, e.g. a request with a bad key) so the
    unique constraint, and with it the atomic upsert, also covers requests without a key.
    """

    day = models.DateField()
    key_id = models.BigIntegerField(default=0)
    user_id = models.BigIntegerField(default=0)
    model = models.CharField(max_length=200)
    requests = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)
    cost_nanos = models.BigIntegerField(default=0, help_text="Cost in 1e-9 USD (integer: sums stay exact).")
    latency_ms_total = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name = "daily usage"
        verbose_name_plural = "daily usage"
        constraints = [models.UniqueConstraint(fields=["day", "key_id", "model"], name="usage_daily_unique")]
        indexes = [models.Index(fields=["user_id", "day"]), models.Index(fields=["day"])]

    def __str__(self) -> str:
        return f"{self.day} key {self.key_id} {self.model}: {self.requests} requests"

    @property
    def cost(self) -> Decimal:
        return Decimal(self.cost_nanos) / NANOS


# Upper bounds (ms) of the latency histogram buckets; the last bucket is open-ended.
LATENCY_BUCKETS_MS = (50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)


class LatencyDaily(models.Model):
    """Per day and model: how many requests fell in each latency bucket (for percentiles)."""

    day = models.DateField()
    model = models.CharField(max_length=200)
    bucket_ms = models.PositiveIntegerField(help_text="Upper bound of the bucket; 0 = above the largest.")
    count = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name = "daily latency histogram"
        constraints = [models.UniqueConstraint(fields=["day", "model", "bucket_ms"], name="latency_daily_unique")]


class StoredResponse(models.Model):
    """A Responses API answer kept with `store: true`, with every input item it saw; owned by the key's user.

    `previous_response_id` continues from `input_items` + the response's `output`. Rows expire after
    GATEWAY_RESPONSES_RETENTION_DAYS (`expires_at`; none when retention is 0).
    """

    id = models.CharField(primary_key=True, max_length=64)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey(APIKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    model = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    previous_response_id = models.CharField(max_length=64, blank=True)
    response = models.JSONField(help_text="The Response object as the client received it.")
    input_items = models.JSONField(default=list, help_text="Every input item, the continued history first.")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "created_at"])]

    def __str__(self) -> str:
        return f"{self.id} ({self.model})"
